"""The rendered module: parses, says what manages it, and keeps the key out of every command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tailnix.nixmodule import nix_string, render_module
from tailnix.settings import parse_settings


def _parse(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tailscale-autoconnect.nix"
    path.write_text(text)
    result = subprocess.run(
        ["nix-instantiate", "--store", "dummy://", "--parse", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", ["autoconnect", "native"])
def test_module_parses_and_says_what_manages_it(mode: str, tmp_path: Path) -> None:
    text = render_module(parse_settings("desk", {"tailnix_mode": mode}))
    _parse(tmp_path, text)
    assert text.startswith("# Tailscale for this host")
    assert "Managed by tailnix" in text
    assert "sopsFile = ./secrets/tailscale.yaml;" in text
    assert 'sha256 = "1f0j45mxb2zv672icpfvi7vnz8l4ccgxlkg79jca8avg00lj9gz3";' in text


def test_autoconnect_unit_is_ordered_after_tailscaled_and_bounded() -> None:
    text = render_module(parse_settings("desk", {}))
    assert 'after = [ "tailscaled.service" ];' in text
    assert "tailscale.service" not in text.replace("tailscaled.service", "")
    assert "TimeoutStartSec = 120;" in text
    assert "sleep 2" not in text
    assert '--auth-key="file:$keyfile"' in text
    assert 'restartUnits = [ "tailscale-autoconnect.service" ];' in text
    for state in ("NeedsLogin", "NeedsMachineAuth", "Stopped"):
        assert state in text


def test_native_mode_uses_nixos_options() -> None:
    text = render_module(parse_settings("desk", {"tailnix_mode": "native"}))
    assert "services.tailscale.authKeyFile = config.sops.secrets.tailscale_auth_key.path;" in text
    assert "services.tailscale.extraUpFlags = upFlags;" in text
    assert "systemd.services" not in text
    assert 'restartUnits = [ "tailscaled-autoconnect.service" ];' in text


def test_routing_features_only_for_routers() -> None:
    plain = render_module(parse_settings("desk", {}))
    router = render_module(parse_settings("gw", {"tailscale_advertise_routes": ["10.1.0.0/16"]}))
    assert "useRoutingFeatures" not in plain
    assert 'useRoutingFeatures = lib.mkDefault "both";' in router
    assert '"--advertise-routes=10.1.0.0/16"' in router


def test_nix_string_escapes_interpolation_and_quotes() -> None:
    assert nix_string('a"b${c}\\') == '"a\\"b\\${c}\\\\"'


_EVALUATE = """
let
  name = builtins.getEnv "SECRET";
  module = import {path} {{
    config = {{
      sops.secrets.${{name}}.path = "/run/secrets/${{name}}";
      services.tailscale.package = "tailscale";
    }};
    lib = {{ mkDefault = x: x; escapeShellArg = x: x; escapeShellArgs = builtins.concatStringsSep " "; }};
    pkgs = {{ jq = "jq"; }};
  }};
in {{
  secrets = builtins.attrNames module.sops.secrets;
  script = module.systemd.services.tailscale-autoconnect.script or "";
  keyFile = module.services.tailscale.authKeyFile or "";
}}
"""


@pytest.mark.parametrize("mode", ["autoconnect", "native"])
@pytest.mark.parametrize(
    "name", ["tailscale_auth_key", "tailscale.key", "1key", "key-2", "in", "or", "a.b.c"]
)
def test_every_accepted_secret_name_is_one_attribute_and_its_declared_path_is_used(
    name: str, mode: str, tmp_path: Path
) -> None:
    text = render_module(parse_settings("desk", {"tailnix_secret_name": name, "tailnix_mode": mode}))
    module = tmp_path / "tailscale-autoconnect.nix"
    module.write_text(text)
    result = subprocess.run(
        [
            "nix-instantiate",
            "--store",
            "dummy://",
            "--eval",
            "--strict",
            "--json",
            "-E",
            _EVALUATE.format(path=module),
        ],
        capture_output=True,
        text=True,
        env={"SECRET": name, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    assert evaluated["secrets"] == [name]
    if mode == "autoconnect":
        assert f"key=$(< /run/secrets/{name})" in evaluated["script"]
    else:
        assert evaluated["keyFile"] == f"/run/secrets/{name}"
