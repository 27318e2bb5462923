"""What `retire` finds on a host and what it takes off, from the host's state alone (no host)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pyinfra.context import ctx_host, ctx_state

from tailnix import operations, retirement
from tailnix.facts import HostState
from tailnix.retirement import RETIRED, Removal, logged_in, needs_switch, removal

from .test_operation_tables import FakeHost, _plan, _written

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


# The operations themselves, run as test_operation_tables runs the deploy's: a host context with the
# state canned, nothing connected.


def _commands(operation: str, state: HostState, **arguments: int) -> tuple[list[object], list[str]]:
    host = FakeHost(state)
    operations._STATES.clear()
    try:
        with ctx_state.use(host.state), ctx_host.use(host):
            function = getattr(retirement, operation)._inner
            written = [_written(command, _plan({}, None)) for command in function(**arguments)]
    finally:
        operations._STATES.clear()
    return written, host.noops


def test_logout_runs_tailscale_logout_once() -> None:
    assert _commands("logout", DEPLOYED) == (["tailscale logout"], [])
    assert _commands("logout", RETIRED_HOST) == ([], ["the node is not logged in"])


def test_remove_files_takes_the_lock_keeps_the_originals_and_removes() -> None:
    commands, noops = _commands("remove_files", DEPLOYED, lock_timeout=120)
    assert noops == []
    assert commands[0][0] == "lock.sh"  # type: ignore[index]
    assert commands[1:6] == [
        [
            "record-original.sh",
            "/var/lib/tailnix/pending",
            "/etc/nixos/tailscale-autoconnect.nix",
            ".tailnix-absent",
        ],
        "rm -f /etc/nixos/tailscale-autoconnect.nix",
        [
            "record-original.sh",
            "/var/lib/tailnix/pending",
            "/etc/nixos/secrets/tailscale.yaml",
            ".tailnix-absent",
        ],
        "rm -f /etc/nixos/secrets/tailscale.yaml",
        "rmdir /etc/nixos/secrets 2>/dev/null || true",
    ]
    assert ["upload", "/etc/nixos/.configuration.nix.tailnix-new", BEFORE] in commands
    assert _commands("remove_files", RETIRED_HOST, lock_timeout=120) == (
        [],
        ["nothing of tailnix in /etc/nixos"],
    )


def test_switch_only_when_something_of_tailnix_is_left() -> None:
    assert _commands("switch", RETIRED_HOST, confirm_timeout=60) == (
        [],
        ["the running system has no tailnix module"],
    )
    commands, _ = _commands("switch", DEPLOYED, confirm_timeout=60)
    assert commands[0][0] == "switch-start.sh" and "retired" in commands[0]  # type: ignore[index,operator]
    assert commands[1][0] == "await_switch"  # type: ignore[index]
