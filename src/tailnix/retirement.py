"""Take tailnix off a NixOS host: the reverse of the deploy (tailnix.playbook), run by `tailnix retire`.

    pyinfra inventory.py deploys/retire.py --limit HOST

On the host: log the node out of the tailnet; remove the Tailscale module, the encrypted secrets file and
the module's import (configuration.nix back to its text from before the deploy added it, or flake.nix
without the entry); then switch, with the deploy's rollback (tailnix.switch). A host with nothing of
tailnix left gets no command.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from dataclasses import dataclass
from io import StringIO

from pyinfra.api.command import FunctionCommand, StringCommand
from pyinfra.api.facts import FactBase
from pyinfra.api.operation import operation
from pyinfra.context import host

from tailnix import operations, paths
from tailnix.facts import HostState
from tailnix.flake import read_flake
from tailnix.nix_imports import ImportEditError, has_import, manual_instruction, remove_entry, remove_import
from tailnix.settings import parse_settings
from tailnix.sudo import operation_arguments
from tailnix.switch import await_switch, new_token, start_command

LOGOUT = "Log the node out of the tailnet"
REMOVE = "Remove tailnix's files from /etc/nixos"
SWITCH = "nixos-rebuild switch"
RETIRED = "retired"
"""What the switch job writes as the applied fingerprint after a retirement: no deploy's fingerprint."""
LOGGED_IN = ("Running", "Starting", "Stopped", "NeedsMachineAuth")
"""Backend states of a node that control still knows as logged in."""


class NewestConfigurationBackup(FactBase[str | None]):
    """The newest copy of configuration.nix a deploy kept before adding the import (None when none)."""

    def command(self) -> str:
        directory = shlex.quote(paths.BACKUP_DIR)
        return f"newest=$(ls -1 {directory}/configuration.nix.* 2>/dev/null | sort | tail -n 1); " + (
            '[ -n "$newest" ] && base64 -w 0 "$newest"; echo'
        )

    def process(self, output: list[str]) -> str | None:
        text = "".join(output).strip()
        try:
            return base64.b64decode(text, validate=True).decode() if text else None
        except (binascii.Error, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class Removal:
    """What of tailnix is on the host, and the edits that take it off."""

    module: bool
    secrets: bool
    configuration: str | None
    """configuration.nix without the import; None when it has none."""
    flake_nix: str | None
    """flake.nix without the module's entry; None when it names none."""

    @property
    def anything(self) -> bool:
        """Whether there is a file to remove or to edit."""
        return self.module or self.secrets or self.configuration is not None or self.flake_nix is not None

    def describe(self) -> list[str]:
        """The changes, as the output lists them."""
        said = [paths.MODULE_NAME] if self.module else []
        said += [paths.SECRETS_IMPORT[2:]] if self.secrets else []
        said += [f"the import in {paths.CONFIGURATION_FILE}"] if self.configuration is not None else []
        said += [f"the entry in {paths.NIXOS_DIR}/flake.nix"] if self.flake_nix is not None else []
        return said


def removal(state: HostState, original: str | None) -> Removal:
    """What to remove from a host in `state`; `original` is the newest kept configuration.nix.

    Raises ImportEditError when configuration.nix imports the module in a shape that cannot be edited.
    """
    configuration = None
    if state.configuration is not None and has_import(state.configuration, paths.MODULE_IMPORT):
        configuration = remove_import(state.configuration, paths.MODULE_IMPORT, original=original)
    flake_nix = None
    if state.flake_nix is not None and read_flake(state.flake_nix).imports_module:
        flake_nix = remove_entry(state.flake_nix, paths.MODULE_IMPORT)
    return Removal(state.module_sha256 is not None, state.secret_sha256 is not None, configuration, flake_nix)


def logged_in(state: HostState) -> bool:
    """Whether the node is logged in to the tailnet (tailscaled answers, with a logged-in state)."""
    status = state.tailscale_status or {}
    return status.get("BackendState") in LOGGED_IN


def needs_switch(state: HostState, found: Removal) -> bool:
    """Whether the host must switch: files to remove, a failed switch's files, or a tailnix system running."""
    return found.anything or state.pending or state.applied not in (None, RETIRED)


def _host_removal(state: HostState) -> Removal:
    original = host.get_fact(NewestConfigurationBackup)
    try:
        return removal(state, original if isinstance(original, str) else None)
    except ImportEditError as error:
        raise operations.HostRefused(
            f"{paths.CONFIGURATION_FILE} cannot be edited safely ({error}); remove "
            f"{paths.MODULE_IMPORT} from its imports by hand ({manual_instruction(paths.MODULE_IMPORT)}, "
            "in reverse), then retire again"
        ) from None


@operation()
def logout() -> operations.Commands:
    """`tailscale logout`: the node goes down and its node key is expired (a new use needs a new login)."""
    state = operations.host_state()
    if state is None or not logged_in(state):
        host.noop("the node is not logged in")
        return
    yield StringCommand("tailscale logout")


@operation()
def remove_files(lock_timeout: int) -> operations.Commands:
    """Remove the module, the secrets file and the import; their originals are kept until the switch succeeds.

    + lock_timeout: seconds to wait for another deploy's lock on the host
    """
    state = operations.host_state()
    if state is None:
        raise operations.HostRefused(operations.UNREADABLE_STATE)
    found = _host_removal(state)
    if not needs_switch(state, found):
        host.noop("nothing of tailnix in /etc/nixos")
        return
    yield StringCommand(operations.lock_command(lock_timeout))
    for present, path in ((found.module, paths.MODULE_FILE), (found.secrets, paths.SECRETS_FILE)):
        if present:
            yield operations.record_original(path)
            yield StringCommand(f"rm -f {shlex.quote(path)}")
    if found.secrets:
        # Only when it holds nothing else: the directory may be the user's too.
        yield StringCommand(f"rmdir {shlex.quote(paths.SECRETS_DIR)} 2>/dev/null || true")
    if found.configuration is not None:
        yield from operations.replace_file(paths.CONFIGURATION_FILE, StringIO(found.configuration), "0644")
    if found.flake_nix is not None:
        yield from operations.replace_file(f"{paths.NIXOS_DIR}/flake.nix", StringIO(found.flake_nix), "0644")
    if state.git_repository and state.git_tracked:
        names = " ".join(shlex.quote(name) for name in state.git_tracked)
        yield StringCommand(f"git -C {paths.NIXOS_DIR} rm -q --cached --ignore-unmatch -- {names}")


@operation()
def switch(confirm_timeout: int) -> operations.Commands:
    """Switch to the configuration without tailnix, confirmed over a new SSH connection or rolled back.

    + confirm_timeout: seconds the host waits for the confirmation before it rolls back by itself
    """
    state = operations.host_state()
    if state is None:
        return
    if not needs_switch(state, _host_removal(state)):
        host.noop("the running system has no tailnix module")
        return
    token = new_token()
    flake_attr = None if state.flake_nix is None else ""
    yield StringCommand(
        start_command(
            token=token, fingerprint=RETIRED, flake_attr=flake_attr, confirm_timeout=confirm_timeout
        )
    )
    yield FunctionCommand(await_switch, (token, confirm_timeout, operation_arguments(host)), {})


def retire_tailscale() -> None:
    """Add the steps that take tailnix off the current host (pyinfra runs the deploy file per host)."""
    settings = operations.begin_host(lambda: parse_settings(host.name, host.data.dict()))  # type: ignore[no-untyped-call]
    with operations.refused_alone():
        operations.require_sudo()
        state = operations.host_state(settings.lock_timeout)
        if state is not None:
            if state.switch_running:
                raise operations.HostRefused(
                    f"{host.name}: an earlier deploy's switch is still running; retire again once it has ended"
                )
            logout(name=LOGOUT)
            remove_files(name=REMOVE, lock_timeout=settings.lock_timeout)
            switch(name=SWITCH, confirm_timeout=settings.confirm_timeout)
