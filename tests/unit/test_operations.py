"""The decisions the operations make from a host's state, without a host."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tailnix.facts import HostState, TailnixHostState
from tailnix.nixmodule import render_module
from tailnix.operations import needs_switch, prefs_mismatches
from tailnix.plan import HostPlan, ModuleFile
from tailnix.settings import parse_settings
from tailnix.sops import SopsMetadata

STOCK = "{ ... }:\n{\n  imports = [ ./hardware-configuration.nix ];\n}\n"
IMPORTED = "{ ... }:\n{\n  imports = [ ./hardware-configuration.nix ./tailscale-autoconnect.nix ];\n}\n"


def _plan() -> HostPlan:
    settings = parse_settings("desk", {}, base_dir=Path("/nonexistent"))
    text = render_module(settings)
    return HostPlan(
        settings=settings,
        secrets=SopsMetadata(
            recipients=("age1x",), last_modified="", keys=("tailscale_auth_key",), unencrypted={}
        ),
        secrets_sha256="a" * 64,
        module=ModuleFile(text, "b" * 64),
        module_for_sops_nix_flake=ModuleFile(render_module(settings, sops_nix_from_flake=True), "d" * 64),
    )


def _state(**changes: object) -> HostState:
    base = HostState(
        os_id="nixos", os_version="25.11", os_name="NixOS 25.11", host_key=None, secret_sha256="a" * 64,
        module_sha256="b" * 64, configuration_sha256="c" * 64, configuration=IMPORTED,
        applied=_plan().fingerprint, pending=False, flake=False, has_nix_instantiate=True,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, False),
        ({"applied": None}, True),
        ({"applied": "0" * 64}, True),
        ({"pending": True}, True),
        ({"configuration": STOCK}, True),
        ({"configuration": "{ x = [ ] ++ y; }"}, True),
    ],
    ids=[
        "converged",
        "never switched",
        "other config applied",
        "last switch unfinished",
        "import missing",
        "uneditable",
    ],
)
def test_needs_switch(changes: dict[str, object], expected: bool) -> None:
    assert needs_switch(_state(**changes), _plan()) is expected


def test_prefs_that_match_the_settings_give_no_mismatch() -> None:
    settings = parse_settings(
        "gw", {"tailscale_advertise_routes": ["10.0.0.0/24"], "tailscale_advertise_exit_node": True}
    )
    prefs = {
        "RouteAll": True,
        "AdvertiseRoutes": ["::/0", "10.0.0.0/24", "0.0.0.0/0"],
        "AdvertiseTags": None,
        "RunSSH": False,
    }
    assert prefs_mismatches(settings, prefs) == []


def test_prefs_mismatch_names_the_pref_and_both_values() -> None:
    settings = parse_settings("gw", {"tailscale_ssh": True})
    prefs = {"RouteAll": True, "AdvertiseRoutes": [], "AdvertiseTags": [], "RunSSH": False}
    assert prefs_mismatches(settings, prefs) == ["RunSSH is False, the settings want True"]


def test_host_state_fact_parses_its_own_output() -> None:
    status = {"BackendState": "Running", "Self": {"HostName": "x", "TailscaleIPs": ["100.64.0.9"]}}
    output = [
        "os_id=nixos", "os_version=25.11", 'os_name="NixOS 25.11 (Xantusia)"',
        "host_key=ssh-ed25519 AAAA root@x", "applied=", "pending=yes", "nix_instantiate=yes",
        "b" * 64 + "  /etc/nixos/tailscale-autoconnect.nix",
        "c" * 64 + "  /etc/nixos/configuration.nix",
        "configuration_b64=e30K", "flake_b64=",
        "--- tailscale_status", *json.dumps(status, indent=2).splitlines(),
        "--- tailscale_prefs", "{", '  "RunSSH": false', "}",
    ]  # fmt: skip
    state = TailnixHostState().process(output)
    assert state.is_nixos and state.os_name == "NixOS 25.11 (Xantusia)"
    assert state.secret_sha256 is None and state.module_sha256 == "b" * 64
    assert state.configuration == "{}\n" and state.pending and not state.flake and state.applied is None
    assert state.has_nix_instantiate and state.flake_nix is None
    assert state.tailscale_status == status and state.tailscale_prefs == {"RunSSH": False}


def test_host_state_command_runs_in_a_posix_shell_on_a_host_that_is_not_nixos(tmp_path: Path) -> None:
    # This machine is a Debian without /etc/nixos: the command must still succeed and say so. A stand-in
    # `tailscale` prints its JSON without a final newline, as `tailscale status --json` does.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tailscale"
    fake.write_text(
        '#!/bin/sh\ncase "$1" in status) printf \'{\\n  "BackendState": "Running"\\n}\' ;; '
        "debug) printf '{\"RunSSH\": false}' ;; esac\n"
    )
    fake.chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", TailnixHostState().command()],
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    state = TailnixHostState().process(done.stdout.splitlines())
    assert state.os_id == "debian" and not state.is_nixos
    assert state.configuration is None and state.configuration_sha256 is None and state.flake_nix is None
    assert not state.pending and state.applied is None
    assert state.tailscale_status == {"BackendState": "Running"}
    assert state.tailscale_prefs == {"RunSSH": False}


def test_a_set_pref_is_compared_with_its_field_in_the_prefs() -> None:
    """`tailscale debug prefs` prints ipn.Prefs (`ipn/prefs.go`): RunWebClient, RelayServerPort (a number),
    AutoUpdate.Check nested."""
    settings = parse_settings("gw", {"tailscale_set": {"webclient": True, "relay-server-port": 40000}})
    prefs = {"RouteAll": True, "AdvertiseRoutes": [], "AdvertiseTags": [], "RunSSH": False}
    assert prefs_mismatches(settings, {**prefs, "RunWebClient": True, "RelayServerPort": 40000}) == []
    assert prefs_mismatches(settings, {**prefs, "RunWebClient": False}) == [
        "RunWebClient is False, the settings want True",
        "RelayServerPort is None, the settings want 40000",
    ]
