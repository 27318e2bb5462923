"""The configuration.nix import editor: minimal edits that still parse."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tailnix.nix_imports import ImportEditError, add_import, has_import, remove_import

IMPORT = "./tailscale-autoconnect.nix"

STOCK = """\
# Edit this configuration file to define what should be installed on
# your system.  Help is available in the configuration.nix(5) man page.

{ config, lib, pkgs, ... }:

{
  imports =
    [ # Include the results of the hardware scan.
      ./hardware-configuration.nix
    ];

  boot.loader.systemd-boot.enable = true;
  system.stateVersion = "25.11"; # Did you read the comment?
}
"""

SHAPES = {
    "stock": (
        STOCK,
        STOCK.replace(
            "      ./hardware-configuration.nix\n",
            "      ./hardware-configuration.nix\n      ./tailscale-autoconnect.nix\n",
        ),
    ),
    "one line": (
        "{ pkgs, ... }:\n{\n  imports = [ ./hardware-configuration.nix ];\n}\n",
        "{ pkgs, ... }:\n{\n  imports = [ ./hardware-configuration.nix ./tailscale-autoconnect.nix ];\n}\n",
    ),
    "no imports": (
        "{ pkgs, ... }:\n\n{\n  services.openssh.enable = true;\n}\n",
        "{ pkgs, ... }:\n\n{\n  imports = [ ./tailscale-autoconnect.nix ];\n  services.openssh.enable = true;\n}\n",
    ),
    "single-line module": (
        "{ ... }: { services.openssh.enable = true; }\n",
        "{ ... }: { imports = [ ./tailscale-autoconnect.nix ]; services.openssh.enable = true; }\n",
    ),
    "empty list": (
        "{ ... }: { imports = [ ]; }\n",
        "{ ... }: { imports = [ ./tailscale-autoconnect.nix ]; }\n",
    ),
    "let in, comments and strings that look like imports": (
        """{ config, ... }:
let
  other = { imports = [ ./no.nix ]; };
  inner = let x = 1; in x;
in
{
  imports = [
    ./hardware-configuration.nix
    # ./tailscale-autoconnect.nix
    /* ] */ ./other.nix # ]
  ];
  environment.etc."motd".text = ''
    imports = [ ''${x} ]
  '';
}
""",
        """{ config, ... }:
let
  other = { imports = [ ./no.nix ]; };
  inner = let x = 1; in x;
in
{
  imports = [
    ./hardware-configuration.nix
    # ./tailscale-autoconnect.nix
    /* ] */ ./other.nix # ]
    ./tailscale-autoconnect.nix
  ];
  environment.etc."motd".text = ''
    imports = [ ''${x} ]
  '';
}
""",
    ),
    "args@ pattern": (
        "args@{ pkgs, ... }:\n{\n  imports = [\n    ./a.nix\n  ];\n}\n",
        "args@{ pkgs, ... }:\n{\n  imports = [\n    ./a.nix\n    ./tailscale-autoconnect.nix\n  ];\n}\n",
    ),
}


def _parses(tmp_path: Path, text: str) -> None:
    path = tmp_path / "configuration.nix"
    path.write_text(text)
    result = subprocess.run(
        ["nix-instantiate", "--store", "dummy://", "--parse", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("shape", SHAPES)
def test_edit_is_minimal_and_parses(shape: str, tmp_path: Path) -> None:
    before, expected = SHAPES[shape]
    after = add_import(before, IMPORT)
    assert after == expected
    assert has_import(after, IMPORT)
    _parses(tmp_path, after)


@pytest.mark.parametrize("shape", SHAPES)
def test_edit_is_made_once(shape: str) -> None:
    once = add_import(SHAPES[shape][0], IMPORT)
    assert add_import(once, IMPORT) == once


def test_commented_out_import_does_not_count() -> None:
    assert not has_import("{ ... }: { imports = [ /* ./tailscale-autoconnect.nix */ ]; }", IMPORT)


@pytest.mark.parametrize(
    "source",
    [
        "{ ... }: { imports = [ ./a.nix ] ++ extra; }",
        "{ lib, ... }: lib.mkMerge [ { } ]",
        "{ ... }: { imports = myImports; }",
        "{ ... }: { } // { }",
        "",
        '{ ... }: { x = "unterminated; }',
    ],
)
def test_unsafe_shapes_are_refused(source: str) -> None:
    with pytest.raises(ImportEditError):
        add_import(source, IMPORT)


# The shapes whose edit cannot be told apart from another's without the file from before it: an empty list
# `[ ]` that got the import reads exactly as an `imports = [ ... ];` that tailnix added whole.
NEEDS_THE_ORIGINAL = {"empty list"}


@pytest.mark.parametrize("shape", sorted(set(SHAPES) - NEEDS_THE_ORIGINAL))
def test_removal_gives_back_the_file_from_before_the_import(shape: str, tmp_path: Path) -> None:
    before, edited = SHAPES[shape]
    assert remove_import(edited, IMPORT) == before
    _parses(tmp_path, remove_import(edited, IMPORT))


@pytest.mark.parametrize("shape", SHAPES)
def test_removal_with_the_kept_original_is_exact(shape: str, tmp_path: Path) -> None:
    before, edited = SHAPES[shape]
    assert remove_import(edited, IMPORT, original=before) == before


def test_an_empty_list_without_its_original_still_loses_only_the_import(tmp_path: Path) -> None:
    removed = remove_import(SHAPES["empty list"][1], IMPORT)
    assert not has_import(removed, IMPORT)
    _parses(tmp_path, removed)


def test_an_original_that_does_not_give_this_file_is_not_used() -> None:
    edited = SHAPES["one line"][1].replace("{ pkgs", "{ lib, pkgs")
    assert remove_import(edited, IMPORT, original=SHAPES["one line"][0]) == SHAPES["one line"][0].replace(
        "{ pkgs", "{ lib, pkgs"
    )


def test_an_import_among_the_users_own_lines_is_removed_alone() -> None:
    edited = "{ ... }:\n{\n  imports = [\n    ./a.nix\n    ./tailscale-autoconnect.nix # mine\n    ./b.nix\n  ];\n}\n"
    assert (
        remove_import(edited, IMPORT)
        == "{ ... }:\n{\n  imports = [\n    ./a.nix\n    # mine\n    ./b.nix\n  ];\n}\n"
    )


def test_removal_without_the_import_changes_nothing() -> None:
    for before, _ in SHAPES.values():
        assert remove_import(before, IMPORT) == before
