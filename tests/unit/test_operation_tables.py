"""Every operation, tested as pyinfra tests its own: without a host, from tables of cases.

Each file in tests/unit/operations/ is one operation's table. A case gives the host's state (changes to a
converged host), the host data (settings) and the plan's extras, and what the operation must do: the exact
commands (`commands`), the `noop` sentence when there is nothing to do, or the `refusal` (the
`OperationError` it raises). As in pyinfra's own tests/test_operations.py, the operation's generator is
run inside a host context whose facts are canned; nothing is connected.

How commands are written in the tables:
- a shell command as its text;
- a script of src/tailnix/host_scripts as `["lock.sh", ARGUMENT...]` (an argument that is a whole script is
  `<switch-job.sh>`, the plan's fingerprint `<fingerprint>`);
- an upload as `["upload", DESTINATION, CONTENT]`, CONTENT being the text, `<module>` or
  `<module for a sops-nix flake>`, or `<secrets file>` for the local file;
- a Python callback as `[NAME, ARGUMENT...]`, with its string and number arguments.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from io import StringIO
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from pyinfra.api.command import FileUploadCommand, FunctionCommand, PyinfraCommand, StringCommand
from pyinfra.api.exceptions import OperationError
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from tailnix import host_scripts, operations
from tailnix.agekey import ssh_public_key_to_age
from tailnix.facts import HostState
from tailnix.nixmodule import render_module
from tailnix.plan import HostPlan, ModuleFile
from tailnix.settings import parse_settings
from tailnix.sops import SopsMetadata

TABLES = Path(__file__).parent / "operations"
SCRIPTS = ("lock.sh", "parses-as-it-is.sh", "record-original.sh", "switch-job.sh", "switch-start.sh",
           "verify-poll.sh", "host-state.sh")  # fmt: skip
HOLDER = "tester@workstation (pid 1) since 2026-11-28T00:00:00Z"
TOKEN = "0123456789abcdef"
SECRETS = Path("/fleet/secrets/tailscale.yaml")
IMPORTED = "{ ... }:\n{\n  imports = [ ./hardware-configuration.nix ./tailscale-autoconnect.nix ];\n}\n"


def _host_key() -> str:
    public = bytes(nacl.signing.SigningKey(bytes(32)).verify_key)
    blob = b"".join(len(part).to_bytes(4, "big") + part for part in (b"ssh-ed25519", public))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} root@desk"


HOST_KEY = _host_key()


@dataclass
class FakeState:
    """What the operations read of pyinfra's state."""

    current_stage: StateStage = StateStage.Prepare


@dataclass
class FakeHost:
    """A host whose only fact is the tailnix state it is given."""

    host_state: HostState | None
    name: str = "desk"
    state: FakeState = field(default_factory=FakeState)
    current_op_global_arguments: dict[str, Any] = field(default_factory=dict)
    noops: list[str] = field(default_factory=list)

    def get_fact(self, fact: object, **arguments: object) -> HostState | None:
        return self.host_state

    def noop(self, description: str) -> None:
        self.noops.append(description)

    def log_styled(self, message: str, **styles: object) -> None:
        pass


def _plan(host_data: dict[str, Any], key_expires: str | None) -> HostPlan:
    settings = parse_settings("desk", {"tailnix_secrets_file": str(SECRETS), **host_data})
    return HostPlan(
        settings=settings,
        secrets=SopsMetadata(
            recipients=(ssh_public_key_to_age(HOST_KEY),),
            last_modified="",
            keys=("tailscale_auth_key",),
            unencrypted={},
        ),
        secrets_sha256=hashlib.sha256(b"the encrypted file").hexdigest(),
        module=ModuleFile.of(render_module(settings)),
        module_for_sops_nix_flake=ModuleFile.of(render_module(settings, sops_nix_from_flake=True)),
        key_expires=date.fromisoformat(key_expires) if key_expires else None,
    )


def _converged(plan: HostPlan) -> HostState:
    """A host as the last deploy left it: Running, with the prefs the settings want."""
    status = {"BackendState": "Running", "Self": {"HostName": "desk", "TailscaleIPs": ["100.64.0.1"]}}
    prefs = {
        "RouteAll": plan.settings.accept_routes,
        "AdvertiseRoutes": [],
        "AdvertiseTags": [],
        "RunSSH": plan.settings.ssh,
    }
    return HostState(
        os_id="nixos", os_version="25.11", os_name="NixOS 25.11", host_key=HOST_KEY,
        secret_sha256=plan.secrets_sha256, module_sha256=plan.module.sha256, configuration_sha256="c" * 64,
        configuration=IMPORTED, applied=plan.fingerprint, pending=False, flake=False,
        has_nix_instantiate=True, tailscale_status=status, tailscale_prefs=prefs,
    )  # fmt: skip


def _content(content: object, plan: HostPlan) -> object:
    if isinstance(content, StringIO):
        text = content.getvalue()
        names = {
            plan.module.text: "<module>",
            plan.module_for_sops_nix_flake.text: "<module for a sops-nix flake>",
        }
        return names.get(text, text)
    return "<secrets file>" if content == str(SECRETS) else content


def _script_call(command: str) -> list[str] | None:
    """`["name.sh", ARGUMENT...]` for a command made by host_scripts.command, else None."""
    scripts = {host_scripts.text(name): f"<{name}>" for name in SCRIPTS}
    for name in SCRIPTS:
        prefix = command.removesuffix("\n" + host_scripts.text(name))
        if prefix != command and prefix.startswith("set -- "):
            words = shlex.split(prefix[len("set -- ") :])
            return [name, *(scripts.get(word, word) for word in words)]
    return None


def _written(command: PyinfraCommand, plan: HostPlan) -> object:
    """A command as the tables write it."""
    if isinstance(command, StringCommand):
        text = command.get_raw_value()
        call = _script_call(text)
        if call is None:
            return text
        fingerprints = {
            plan.fingerprint: "<fingerprint>",
            plan.fingerprint_for(plan.module_for_sops_nix_flake): "<fingerprint for a sops-nix flake>",
        }
        return [fingerprints.get(word, word) for word in call]
    if isinstance(command, FileUploadCommand):
        return ["upload", command.dest, _content(command.src, plan)]
    if isinstance(command, FunctionCommand):
        values = [value for value in command.args if isinstance(value, str | int)]
        return [command.function.__name__, *values]
    raise AssertionError(f"an operation yielded {command!r}")


def _cases() -> Iterator[Any]:
    for table in sorted(TABLES.glob("*.json")):
        for case in json.loads(table.read_text()):
            yield pytest.param(table.stem, case, id=f"{table.stem}: {case['name']}")


@pytest.fixture(autouse=True)
def _fixed_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(operations, "lock_holder", lambda: HOLDER)
    monkeypatch.setattr(operations, "new_token", lambda: TOKEN)
    yield
    operations._STATES.clear()


@pytest.mark.parametrize(("operation", "case"), list(_cases()))
def test_operation(operation: str, case: dict[str, Any]) -> None:
    plan = _plan(case.get("host_data", {}), case.get("key_expires"))
    changes = case.get("state", {})
    state = None if changes is None else replace(_converged(plan), **changes)
    host = FakeHost(state)
    arguments = {"plan": plan} if operation not in ("configuration_import", "flake_git_index") else {}
    function = getattr(operations, operation)._inner
    with ctx_state.use(host.state), ctx_host.use(host):
        if "refusal" in case:
            with pytest.raises(OperationError) as refused:
                list(function(**arguments))
            assert str(refused.value) == case["refusal"]
            return
        commands = [_written(command, plan) for command in function(**arguments)]
    assert commands == case.get("commands", [])
    assert host.noops == ([case["noop"]] if "noop" in case else [])


def test_every_operation_has_a_table_with_a_case_that_changes_nothing() -> None:
    names = {
        name
        for name in dir(operations)
        if hasattr(getattr(operations, name), "_inner")
        and getattr(operations, name).__module__ == operations.__name__
    }
    tables = {table.stem: json.loads(table.read_text()) for table in TABLES.glob("*.json")}
    assert names == set(tables)
    for name, cases in tables.items():
        assert any("noop" in case for case in cases), f"{name}: no case where nothing changes"
