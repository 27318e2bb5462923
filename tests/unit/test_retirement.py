"""What `retire` finds on a host and what it takes off, from the host's state alone (no host)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tailnix.facts import HostState
from tailnix.retirement import RETIRED, Removal, logged_in, needs_switch, removal

BEFORE = "{ ... }:\n{\n  imports = [ ./hardware-configuration.nix ];\n}\n"
IMPORTED = "{ ... }:\n{\n  imports = [ ./hardware-configuration.nix ./tailscale-autoconnect.nix ];\n}\n"
FLAKE = "{\n  outputs = { nixpkgs, ... }: {\n    modules = [\n      ./hardware.nix\n      ./tailscale-autoconnect.nix\n    ];\n  };\n}\n"

DEPLOYED = HostState(
    os_id="nixos", os_version="25.11", os_name="NixOS 25.11", host_key=None, secret_sha256="s" * 64,
    module_sha256="m" * 64, configuration_sha256="c" * 64, configuration=IMPORTED, applied="a fingerprint",
    pending=False, flake=False, has_nix_instantiate=True, tailscale_status={"BackendState": "Running"},
)  # fmt: skip
RETIRED_HOST = replace(
    DEPLOYED,
    secret_sha256=None,
    module_sha256=None,
    configuration=BEFORE,
    applied=RETIRED,
    tailscale_status=None,
)


def test_a_deployed_host_loses_its_files_and_import_and_switches() -> None:
    found = removal(DEPLOYED, None)
    assert found == Removal(module=True, secrets=True, configuration=BEFORE, flake_nix=None)
    assert found.describe() == [
        "tailscale-autoconnect.nix",
        "secrets/tailscale.yaml",
        "the import in /etc/nixos/configuration.nix",
    ]
    assert needs_switch(DEPLOYED, found)
    assert logged_in(DEPLOYED)


def test_a_retired_host_needs_nothing() -> None:
    found = removal(RETIRED_HOST, None)
    assert not found.anything and not needs_switch(RETIRED_HOST, found) and not logged_in(RETIRED_HOST)


def test_files_removed_by_hand_without_a_switch_still_need_one() -> None:
    state = replace(RETIRED_HOST, applied="a fingerprint")
    assert needs_switch(state, removal(state, None))


def test_a_failed_switch_left_pending_files_and_needs_another() -> None:
    state = replace(RETIRED_HOST, pending=True)
    assert needs_switch(state, removal(state, None))


def test_a_host_never_deployed_to_needs_nothing() -> None:
    state = replace(RETIRED_HOST, applied=None)
    assert not needs_switch(state, removal(state, None))


def test_the_kept_original_gives_back_an_empty_list_exactly() -> None:
    state = replace(DEPLOYED, configuration="{ ... }: { imports = [ ./tailscale-autoconnect.nix ]; }\n")
    assert removal(state, "{ ... }: { imports = [ ]; }\n").configuration == "{ ... }: { imports = [ ]; }\n"
    assert removal(state, None).configuration == "{ ... }: { }\n"


def test_a_flake_that_names_the_module_loses_the_entry_only() -> None:
    state = replace(DEPLOYED, configuration=BEFORE, flake_nix=FLAKE)
    found = removal(state, None)
    assert found.configuration is None
    assert found.flake_nix == FLAKE.replace("      ./tailscale-autoconnect.nix\n", "")


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("Running", True),
        ("Starting", True),
        ("NeedsMachineAuth", True),
        ("NeedsLogin", False),
        ("NoState", False),
    ],
)
def test_logged_in_states(backend: str, expected: bool) -> None:
    assert logged_in(replace(DEPLOYED, tailscale_status={"BackendState": backend})) is expected
