"""pyinfra operations that put a NixOS host on the tailnet.

Each operation reads the host's state (one fact, one round trip), compares it with the host's plan, and
yields only the commands that close the difference. Files are replaced atomically (upload beside, then
rename); the original of every file a deploy changes is kept under /var/lib/tailnix/pending until a
switch succeeds, and put back if it fails.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shlex
import socket
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import StringIO
from typing import Any, TypeVar

from pyinfra import logger
from pyinfra.api.arguments import ConnectorArguments
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.exceptions import OperationError, PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.operation import operation
from pyinfra.api.state import State, StateStage
from pyinfra.context import host
from pyinfra.context import state as pyinfra_state

from tailnix import connect_errors, events, host_scripts, node_records, paths, pyinfra_shortcuts, steps
from tailnix.agekey import KeyFormatError, ssh_public_key_to_age
from tailnix.drift import PrefDrift, drift_plan, prefs_drift
from tailnix.facts import HostState, TailnixHostState
from tailnix.flake import FlakeShape, read_flake
from tailnix.interrupt import exit_nonzero_on_interrupt
from tailnix.nix_imports import ImportEditError, add_import, has_import, manual_instruction
from tailnix.plan import HostPlan, ModuleFile
from tailnix.reauth import Reauthentication, headscale_retag, login_error, reauthentication
from tailnix.settings import SettingsError, TailscaleSettings
from tailnix.sudo import (
    SudoAccess,
    host_password_refusal,
    login_user,
    operation_arguments,
    sudo_refusal,
    uses_sudo,
)
from tailnix.switch import (
    ABSENT_DIRECTORY_SUFFIX,
    ABSENT_SUFFIX,
    JOB_UNIT,
    LOG_FILE,
    ConfirmCheck,
    await_switch,
    new_token,
    start_command,
)
from tailnix.tailscale_flags import DEFAULT_CONTROL_URL, PREF_OF_SET_ONLY_FLAG

Commands = Generator[Any, None, None]


BACKEND_STATE_MEANINGS = {
    "NoState": "tailscaled is starting or not answering yet",
    "NeedsLogin": (
        "the node is not logged in: the auth key was rejected (expired, already used, revoked or "
        "mistyped) or never used; rotate the key in the secrets file and deploy again"
    ),
    "NeedsMachineAuth": "the node is logged in but waits for an admin to approve it in the admin console",
    "Stopped": "the node is logged in but stopped (`tailscale down` was run)",
    "Starting": (
        "the node is logged in but has no path to its peers or to a DERP relay yet (the host must reach "
        "Tailscale's relays over HTTPS and its peers over UDP)"
    ),
    "InUseOtherUser": "tailscaled is in use by another user",
}


_REPORTED_UNREACHABLE: set[tuple[int, str]] = set()


Read = TypeVar("Read")


def begin_host(read: Callable[[], Read]) -> Read:
    """The start of each tailnix playbook on the current host; what `read` returns (its settings, its plan).

    Ctrl-C ends the run with 130 (pyinfra's own handler exits 0); with $TAILNIX_EVENTS set, what happens
    to the host is also written there as data; a settings error is the host's event and stops the run
    before any host is changed, as pyinfra stops it; the hosts pyinfra could not reach are said.
    """
    exit_nonzero_on_interrupt()
    pyinfra_shortcuts.install()
    events.record_events(host.state)
    try:
        value = read()
    except SettingsError as error:
        events.host_ended(host.state, host.name, events.INVALID, str(error))
        raise
    report_unreachable_hosts()
    return value


def report_unreachable_hosts() -> None:
    """Say once per run, for each host pyinfra could not connect to, that it was left alone.

    pyinfra says nothing at all about a host whose SSH port never answers; this line makes every
    host of the inventory appear in the output.
    """
    current = pyinfra_state
    for failed in sorted(current.failed_hosts, key=lambda h: h.name):
        key = (id(current), failed.name)
        if key in _REPORTED_UNREACHABLE or failed.connected:
            continue
        _REPORTED_UNREACHABLE.add(key)
        # pyinfra's own reason when config.py recorded it (a fleet's older config.py does not).
        reason = connect_errors.reason_of(failed) or (
            f"refused, timed out after {current.config.CONNECT_TIMEOUT}s, or rejected"
        )
        logger.error(f"    [{failed.name}] not deployed: no SSH connection ({reason})")
        address = f"{failed.data.get('ssh_hostname') or failed.name}:{failed.data.get('ssh_port') or 22}"
        events.host_ended(
            failed.state, failed.name, events.UNREACHABLE, f"no SSH connection to {address} ({reason})"
        )


def _report(state: State, host: Host, message: str, ok: bool) -> bool:
    events.host_said(state, host.name, message)
    # Line by line, so that every line carries the host's name.
    for line in message.splitlines():
        host.log_styled(line, fg="green" if ok else "red", log_func=logger.info if ok else logger.error)
    return ok


class HostRefused(OperationError):
    """This host must not be deployed to; the message says why, in words for its user, naming the host.

    Raised by the operations, as pyinfra's own raise `OperationError` for a state they cannot act on.
    """


REFUSED = "Error: refused, nothing was changed on it"
"""The line that ends a refusal's report, as pyinfra ends an operation's error with `Error: ...`."""


def fail_alone(refusal: OperationError) -> None:
    """Report a refusal as this host's error and fail the host alone, while the deploy file is prepared.

    pyinfra 3.10 ends the whole run at an `OperationError` that leaves an operation (`Operation error in
    ...` while preparing; an unexpected exception while executing), whatever the other hosts: the deploy
    file catches it (`refused_alone`), and this fails only this host, as a host pyinfra could not reach is
    failed. The host then runs no operation: a dry run lists no change for it, and a real run counts it
    among `failed_hosts` (exit code 1) while the others go on.
    """
    current = host.state
    _report(current, host, str(refusal), False)
    host.log_styled(REFUSED, fg="red", log_func=logger.error)
    events.host_ended(current, host.name, events.REFUSED, str(refusal))
    try:
        current.fail_hosts({current.inventory.get_host(host.name)})  # type: ignore[no-untyped-call]  # pyinfra does not type it
    except PyinfraError:
        if current.active_hosts:
            raise  # over --fail-percent: pyinfra stops the run, as it does for hosts failing an operation
        # Every host was refused: nothing runs, and the exit code says they failed.


@contextmanager
def refused_alone() -> Iterator[None]:
    """In a deploy file: a refusal raised inside fails this host alone (`fail_alone`), not the run."""
    try:
        yield
    except OperationError as refusal:
        fail_alone(refusal)


# pyinfra runs a fact's command again at every get_fact; the operations compare against the state the
# host had when the run began, so it is read once per host and run: one round trip for all of them.
_STATES: dict[tuple[int, str], HostState | None] = {}


def host_state(switch_wait: int = 0) -> HostState | None:
    """The current host's state as this run found it (read on first use, then kept for the run).

    + switch_wait: seconds to wait first for an earlier deploy's switch job that is still running (it
      confirms or rolls back by itself, and the state read before it ends would be stale)

    None when it could not be read (the connection dropped, say): pyinfra has then said why and
    failed the host, and the deploy leaves it alone.
    """
    key = (id(host.state), host.name)
    if key not in _STATES:
        found = host.get_fact(TailnixHostState, switch_wait=switch_wait)
        _STATES[key] = found if isinstance(found, HostState) else None
    return _STATES[key]


def sudo_problem() -> str | None:
    """Why the current host cannot be deployed through sudo; None when it logs in as root, or sudo works.

    Asked before any command runs through sudo: a sudo that wants a password is refused at once.
    """
    if not uses_sudo(host):
        return None
    refusal = host_password_refusal(host)
    if refusal is not None:
        return refusal
    answer = host.get_fact(SudoAccess, _sudo=False)
    if not isinstance(answer, str):
        return None  # pyinfra could not read it, has said why, and counts the host as failed
    return sudo_refusal(host.name, login_user(host.data.get("ssh_user")), answer)


def require_sudo() -> None:
    """Raise HostRefused when the current host cannot be deployed through sudo (see `sudo_problem`)."""
    problem = sudo_problem()
    if problem is not None:
        raise HostRefused(problem)


UNREADABLE_STATE = "the host's state could not be read (see above), so nothing was changed on it"


def _readable_state() -> HostState:
    """The host's state, for an operation; raises HostRefused when it could not be read."""
    state = host_state()
    if state is None:
        raise HostRefused(UNREADABLE_STATE)
    return state


def _flake(state: HostState) -> FlakeShape | None:
    """The shape of the host's flake.nix, None for a host without one (or one that does not tokenize)."""
    if state.flake_nix is None:
        return None
    try:
        return _read_flake(state.flake_nix)
    except ImportEditError:
        return None


# Every operation asks these questions of the same texts, and many hosts of a fleet share them: reading
# each text once per run keeps the workstation's share of a no-op redeploy small. Not bounded: each host
# asks twice (pyinfra runs an operation while preparing and again while executing), so a bound below the
# fleet's size would evict every text before its second use; a run holds one text per host at most.
_read_flake = functools.cache(read_flake)
_host_key_recipient = functools.cache(ssh_public_key_to_age)


@functools.cache
def _configuration_edit(source: str) -> str | None:
    if has_import(source, paths.MODULE_IMPORT):
        return None
    return add_import(source, paths.MODULE_IMPORT)


def _module(state: HostState, plan: HostPlan) -> ModuleFile:
    flake = _flake(state)
    return plan.module_for(sops_nix_from_flake=flake is not None and flake.uses_sops_nix_module)


def record_original(dest: str) -> StringCommand:
    """Keep the file's current version (or that it did not exist) until a switch succeeds."""
    return StringCommand(host_scripts.command("record-original.sh", paths.PENDING_DIR, dest, ABSENT_SUFFIX))


def replace_file(dest: str, content: str | StringIO, mode: str) -> Commands:
    """Replace `dest` atomically with `content` (root-owned, `mode`), its original kept until a switch succeeds."""
    directory, name = dest.rsplit("/", 1)
    temporary = f"{directory}/.{name}.tailnix-new"
    yield record_original(dest)
    yield FileUploadCommand(content, temporary)
    yield StringCommand(
        "chown root:root {0} && chmod {1} {0} && mv -f {0} {2}".format(
            shlex.quote(temporary), mode, shlex.quote(dest)
        )
    )


def _backend_state(state: HostState) -> str:
    status = state.tailscale_status
    return str(status.get("BackendState", "NoState")) if status else "no tailscale status"


def _say_earlier_switch(state: HostState, *, now: bool = False) -> None:
    """Tell what an earlier deploy's switch did while this deploy waited for it to end.

    + now: say it while the deploy is prepared too (for a host refused then, which executes nothing)
    """
    if state.switch_waited is not None and (now or host.state.current_stage == StateStage.Execute):
        result = (state.switch_result or "no result").split(" ", 2)
        if result[0] in ("running", "switched") and not state.switch_running:
            # The job is gone yet its last line says it is at work: stopped or killed before its result.
            host.log_styled(
                f"an earlier deploy's switch ({JOB_UNIT}) ended without a result (stopped or killed before "
                "it finished); this deploy starts from what it left",
                fg="yellow",
                log_func=logger.warning,
            )
            return
        ended = result[0] + (f": {result[2]}" if len(result) > 2 else "")
        host.log_styled(
            f"waited {state.switch_waited}s for an earlier deploy's switch to end ({ended}); "
            "this deploy starts from what it left",
            fg="yellow",
            log_func=logger.warning,
        )


def _warn_expired_key(plan: HostPlan) -> None:
    """For a host that is Running with an expired key: it stays on the tailnet, but say what comes next."""
    if plan.key_expired() and host.state.current_stage == StateStage.Execute:
        host.log_styled(
            f"its next login would fail: the auth key expired on {plan.key_expires}",
            fg="yellow",
            log_func=logger.warning,
        )


def preflight_problem(state: HostState, plan: HostPlan) -> str | None:
    """Why this host cannot be deployed to, in words for its user; None when it can."""
    name = plan.settings.host
    if not state.is_nixos:
        found = state.os_id or "no /etc/os-release"
        return f"{name} is not NixOS (/etc/os-release ID={found}); tailnix only manages NixOS hosts"
    if state.host_key is None:
        return f"{name} has no SSH ed25519 host key ({paths.HOST_KEY_PUBLIC}); sops-nix needs it to decrypt"
    try:
        recipient = _host_key_recipient(state.host_key)
    except KeyFormatError as error:
        return f"{name}: {paths.HOST_KEY_PUBLIC} is unreadable: {error}"
    if recipient not in plan.secrets.recipients:
        secrets = plan.settings.secrets_file
        if plan.settings.secrets_template is not None:  # one file per host: its rule and file go together
            return (
                f"{name} cannot decrypt {secrets}, its own secrets file: its host key's age recipient "
                f"{recipient} is not among the file's recipients (a reinstalled host?); run "
                f"`tailnix bootstrap {name} --replace-key` and deploy again."
            )
        return (
            f"{name} cannot decrypt {secrets}: its host key's age recipient {recipient} is not among the "
            f"file's recipients. Add `- &{name} {recipient}` to the key group of the rule for this file "
            f"in .sops.yaml, then run `sops updatekeys -y {secrets}` and deploy again."
        )
    if state.switch_running:
        return (
            f"{name}: an earlier deploy's switch ({JOB_UNIT}) is still running after "
            f"{state.switch_waited}s of waiting (tailnix_lock_timeout); it confirms or rolls back by itself "
            f"(its output: {LOG_FILE}); deploy again once it has ended"
        )
    if plan.key_expired() and _backend_state(state) != "Running":
        return (
            f"{name} is not on the tailnet ({_backend_state(state)}) and would log in with the auth key in "
            f"{plan.settings.secrets_file}, which expired on {plan.key_expires}: run `tailnix rotate-key`, "
            "then deploy again"
        )
    if not state.has_nix_instantiate:
        return f"{name} has no nix-instantiate on its PATH; is this a complete NixOS system?"
    if state.configuration is None:
        return f"{name} has no {paths.CONFIGURATION_FILE}; tailnix edits a channel-style configuration"
    flake = _flake(state)
    if state.flake_nix is not None and flake is None:
        return f"{name}: {paths.NIXOS_DIR}/flake.nix cannot be read (unbalanced brackets or strings)"
    attribute = plan.settings.flake_attr or "<its hostname>"
    if flake is not None and not (flake.builds_configuration_nix or flake.imports_module):
        return (
            f"{name}: {paths.NIXOS_DIR}/flake.nix does not build from ./configuration.nix, so an import there "
            f"would not reach the system. Add {paths.MODULE_IMPORT} to the modules of "
            f"nixosConfigurations.{attribute} in flake.nix (modules = [ ... {paths.MODULE_IMPORT} ];) "
            "and deploy again."
        )
    if flake is not None and flake.has_sops_nix_input and not flake.uses_sops_nix_module:
        return (
            f"{name}: {paths.NIXOS_DIR}/flake.nix has a sops-nix input but does not import its module; add "
            f"sops-nix.nixosModules.sops to the modules of nixosConfigurations.{attribute} (tailnix uses "
            "that sops-nix rather than fetching a second copy) and deploy again."
        )
    try:
        _edited_configuration(state)
    except ImportEditError as error:
        return _uneditable_message(error)
    retag = headscale_retag(plan.settings, state.tailscale_status, state.tailscale_prefs)
    return retag.refusal() if retag is not None else None


def require_deployable(state: HostState, plan: HostPlan) -> None:
    """Raise HostRefused, with `preflight_problem`'s sentence, when the host cannot be deployed to."""
    problem = preflight_problem(state, plan)
    if problem is not None:
        if host.state.current_stage == StateStage.Prepare:
            _say_earlier_switch(state, now=True)
        raise HostRefused(problem)


@operation()
def preflight(plan: HostPlan) -> Commands:
    """Check that the host is NixOS and that its SSH host key can open the secrets file, then take its lock.

    + plan: the host's plan (settings, secrets file metadata)
    """
    state = _readable_state()
    _say_earlier_switch(state)
    require_deployable(state, plan)
    _warn_expired_key(plan)
    if not changes_needed(state, plan):
        host.noop(
            f"{plan.settings.host} is NixOS {state.os_version}, can decrypt the secrets file, and needs no change"
        )
        return
    yield StringCommand(lock_command(plan.settings.lock_timeout))
    if _edited_configuration(state) is not None:
        yield StringCommand(_parses_as_it_is_script())


def changes_needed(state: HostState, plan: HostPlan) -> bool:
    """Whether this run will change anything on the host (and so must hold its lock)."""
    return (
        state.secret_sha256 != plan.secrets_sha256
        or state.module_sha256 != _module(state, plan).sha256
        or bool(_untracked_files(state))
        or needs_switch(state, plan)
    )


def lock_holder() -> str:
    """Who holds a host's lock, as another deploy will read it."""
    user = os.environ.get("USER") or str(os.getuid())
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{user}@{socket.gethostname()} (pid {os.getpid()}) since {since}"


def lock_command(timeout: int) -> str:
    """The command that takes the host's deploy lock for this SSH connection (host_scripts/lock.sh)."""
    return host_scripts.command(
        "lock.sh",
        paths.STATE_DIR,
        paths.LOCK_FILE,
        paths.LOCK_HOLDER_FILE,
        timeout,
        lock_holder(),
        JOB_UNIT,
    )


def _parses_as_it_is_script() -> str:
    return host_scripts.command("parses-as-it-is.sh", paths.CONFIGURATION_FILE)


@operation()
def secrets_file(plan: HostPlan) -> Commands:
    """Place the encrypted secrets file in /etc/nixos/secrets, root-only.

    + plan: the host's plan; the local file is uploaded as it is (it is encrypted)
    """
    state = _readable_state()
    if state.secret_sha256 == plan.secrets_sha256:
        host.noop(f"{paths.SECRETS_FILE} is up to date")
        return
    directory = shlex.quote(paths.SECRETS_DIR)
    marker = shlex.quote(paths.PENDING_DIR + paths.SECRETS_DIR + ABSENT_DIRECTORY_SUFFIX)
    parent = shlex.quote(paths.PENDING_DIR + paths.NIXOS_DIR)
    # A directory this deploy creates is removed again if the switch fails.
    yield StringCommand(
        f"if [ ! -d {directory} ]; then install -d -m 0700 {parent} && : > {marker}; fi && "
        f"install -d -m 0700 -o root -g root {directory}"
    )
    yield from replace_file(paths.SECRETS_FILE, str(plan.settings.secrets_file), "0600")


@operation()
def module_file(plan: HostPlan) -> Commands:
    """Place the rendered Tailscale module in /etc/nixos.

    + plan: the host's plan, with the module text
    """
    state = _readable_state()
    module = _module(state, plan)
    if state.module_sha256 == module.sha256:
        host.noop(f"{paths.MODULE_FILE} is up to date")
        return
    yield from replace_file(paths.MODULE_FILE, StringIO(module.text), "0644")


def _uneditable_message(error: ImportEditError) -> str:
    return f"{paths.CONFIGURATION_FILE} cannot be edited safely ({error}); " + manual_instruction(
        paths.MODULE_IMPORT, paths.CONFIGURATION_FILE
    )


def _edited_configuration(state: HostState) -> str | None:
    """The new configuration.nix text, or None when the import is already there (or not needed)."""
    flake = _flake(state)
    if flake is not None and flake.imports_module:
        return None  # the flake imports the module itself
    return _configuration_edit(state.configuration or "")


@operation()
def configuration_import() -> Commands:
    """Add `./tailscale-autoconnect.nix` to the imports of configuration.nix, touching nothing else."""
    state = _readable_state()
    try:
        edited = _edited_configuration(state)
    except ImportEditError as error:
        raise HostRefused(_uneditable_message(error)) from None
    if edited is None:
        host.noop(f"{paths.CONFIGURATION_FILE} already imports {paths.MODULE_IMPORT}")
        return
    backup = shlex.quote(f"{paths.BACKUP_DIR}/configuration.nix.")
    yield StringCommand(
        f"install -d -m 0700 {paths.BACKUP_DIR} && "
        f'cp -a {paths.CONFIGURATION_FILE} {backup}"$(date -u +%Y%m%dT%H%M%SZ)"'
    )
    yield from replace_file(paths.CONFIGURATION_FILE, StringIO(edited), "0644")


def needs_switch(state: HostState, plan: HostPlan) -> bool:
    """Whether the host must switch: something changed since the last successful switch, or it failed."""
    try:
        import_missing = _edited_configuration(state) is not None
    except ImportEditError:
        import_missing = True
    fingerprint = plan.fingerprint_for(_module(state, plan))
    return state.applied != fingerprint or state.pending or import_missing


_FLAKE_FILES = (paths.MODULE_NAME, paths.SECRETS_IMPORT[2:])


def _untracked_files(state: HostState) -> list[str]:
    """Files tailnix places that a git flake cannot see yet (git does not track them)."""
    if state.flake_nix is None or not state.git_repository:
        return []
    return [name for name in _FLAKE_FILES if name not in state.git_tracked]


@operation()
def flake_git_index() -> Commands:
    """On a flake in a git repository, add the placed files to git's index (intent-to-add, no commit).

    A flake sees only the files git tracks; nothing is ever committed on the user's behalf.
    """
    state = _readable_state()
    untracked = _untracked_files(state)
    if not untracked:
        host.noop("no git flake, or git already tracks the placed files")
        return
    names = " ".join(shlex.quote(name) for name in untracked)
    yield StringCommand(f"git -C {paths.NIXOS_DIR} add --intent-to-add -- {names}")
    yield FunctionCommand(
        _report,
        (
            f"added {', '.join(untracked)} to the git index of {paths.NIXOS_DIR} with --intent-to-add, so the "
            "flake sees them; nothing was committed",
            True,
        ),
        {},
    )


def _flake_attr(state: HostState, settings: TailscaleSettings) -> str | None:
    """None for a channel-style host; for a flake host the attribute to build ("" for its hostname)."""
    if state.flake_nix is None:
        return None
    return settings.flake_attr or ""


@operation()
def rebuild(plan: HostPlan) -> Commands:
    """Run `nixos-rebuild switch` when the host's files differ from what its last switch applied.

    + plan: the host's plan; its fingerprint is written on the host after a confirmed switch

    The switch runs detached on the host and must be confirmed over a new SSH connection within
    `tailnix_confirm_timeout` seconds, or the host rolls itself back (see tailnix.switch). On failure
    /etc/nixos is restored to what it was before this deploy, and the next run retries.
    """
    state = _readable_state()
    if not needs_switch(state, plan):
        host.noop("the running system already has this configuration")
        return
    token = new_token()
    yield StringCommand(
        start_command(
            token=token,
            fingerprint=plan.fingerprint_for(_module(state, plan)),
            flake_attr=_flake_attr(state, plan.settings),
            confirm_timeout=plan.settings.confirm_timeout,
        )
    )
    arguments = operation_arguments(host)
    reauth = planned_reauthentication(state, plan)
    check = _came_back_check(reauth, plan.settings, arguments) if reauth is not None else None
    yield FunctionCommand(await_switch, (token, plan.settings.confirm_timeout, arguments, check), {})


def planned_reauthentication(state: HostState, plan: HostPlan) -> Reauthentication | None:
    """The new login this run's switch makes a Running node do (other tags or login server); None for none.

    Only tailnix's own join unit logs a Running node in again (NixOS's leaves a joined node alone).
    """
    if plan.settings.mode != "autoconnect" or not needs_switch(state, plan):
        return None
    return reauthentication(plan.settings, state.tailscale_status, state.tailscale_prefs)


def _node_status(
    host: Host, settings: TailscaleSettings, timeout: int, arguments: ConnectorArguments
) -> dict[str, Any] | None:
    """The node's `tailscale status` once Running or refused by control (verify-poll.sh), bounded."""
    script = host_scripts.command("verify-poll.sh", max(timeout, 1), _join_unit(settings))
    ok, output = host.run_shell_command(StringCommand(script), **arguments)
    return _load_json(_sections(list(output.stdout_lines) if ok else []).get("status", ""))


def _came_back_check(
    reauth: Reauthentication, settings: TailscaleSettings, arguments: ConnectorArguments
) -> ConfirmCheck:
    """The switch is confirmed only once the node is Running again with the new tags (tailnix.reauth).

    The join unit has logged in again during the switch, so the wait is short; it stays within the
    confirmation time, or the job would roll back first for want of an answer.
    """
    wait = min(settings.verify_timeout, settings.confirm_timeout // 2)

    def before(host: Host) -> str | None:
        return reauth.refusal(_node_status(host, settings, wait, arguments))

    def after_rollback(host: Host) -> str:
        # The previous join unit logs the node in again with the tags it had.
        previous = Reauthentication(reauth.host, (), reauth.granted, reauth.wanted_server, reauth.server)
        problem = previous.refusal(_node_status(host, settings, settings.verify_timeout, arguments))
        if problem is None and reauth.moves:
            return f"Tailscale is Running again on its previous login server ({reauth.server or DEFAULT_CONTROL_URL})"
        if problem is None:
            return (
                f"Tailscale is Running again with its previous tags ({', '.join(reauth.granted) or 'none'})"
            )
        return f"the node did not come back as it was: {problem}"

    return ConfirmCheck(before, after_rollback)


@operation()
def reauthenticate(plan: HostPlan) -> Commands:
    """Say that the switch logs a Running node in again, for other tags or another login server.

    + plan: the host's plan

    The new login itself is the join unit's, during the switch; the switch is confirmed only once the
    node is Running with the new tags, and rolled back otherwise (`rebuild`).
    """
    state = _readable_state()
    reauth = planned_reauthentication(state, plan)
    if reauth is None:
        host.noop("the node keeps its tags and login server")
        return
    planned = f"{steps.REAUTHENTICATE}: {reauth.change}"
    if host.state.current_stage == StateStage.Prepare:
        host.log_styled(planned, fg="yellow", log_func=logger.info)
        events.host_planned(host.state, host.name, steps.REAUTHENTICATE, planned)
    yield FunctionCommand(_report, (f"logged in again: {reauth.change}", True), {})


def _join_unit(settings: TailscaleSettings) -> str:
    return paths.AUTOCONNECT_UNIT if settings.mode == "autoconnect" else paths.NATIVE_AUTOCONNECT_UNIT


def _poll_script(settings: TailscaleSettings) -> str:
    return host_scripts.command("verify-poll.sh", settings.verify_timeout, _join_unit(settings))


def _refused_login(settings: TailscaleSettings, error: str, poll: str) -> str:
    polls = poll.split()[1] if len(poll.split()) == 2 else "?"
    return (
        f"Tailscale is NeedsLogin, not Running: control refused the auth key ({error}); the join unit has "
        f"finished, so the verify stopped waiting after {polls} {'poll' if polls == '1' else 'polls'} "
        f"instead of {settings.verify_timeout}s: rotate the key in the secrets file and deploy again"
    )


def _sections(lines: list[str]) -> dict[str, str]:
    sections: dict[str, list[str]] = {"status": []}
    current = "status"
    for line in lines:
        if line.startswith("--- "):
            current = line[4:].strip()
            sections[current] = []
            continue
        sections[current].append(line)
    return {name: "\n".join(body).strip() for name, body in sections.items()}


def _load_json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def prefs_mismatches(settings: TailscaleSettings, prefs: dict[str, Any]) -> list[str]:
    """How the node's prefs (`tailscale debug prefs`) differ from the settings, one sentence each.

    Only the prefs the settings name: one set by hand is drift (`tailnix.drift`), told but not a failure.
    The prefs of `tailscale_set` are checked here too (`tailscale set` changes them, never `up --reset`).
    """
    mismatches = [d.mismatch for d in prefs_drift(settings, prefs) if not d.by_hand]
    for flag, value in settings.set_prefs:
        key = PREF_OF_SET_ONLY_FLAG[flag]
        # `relay-server-port` is a number in the prefs.
        wanted = int(value) if flag == "relay-server-port" else value
        actual: Any = prefs
        for name in key.split("."):
            actual = actual.get(name) if isinstance(actual, dict) else None
        if actual != wanted:
            mismatches.append(f"{key} is {actual!r}, the settings want {wanted!r}")
    return mismatches


def _drift_of(state: HostState, plan: HostPlan) -> list[PrefDrift]:
    """The drift of a Running node's prefs from its settings (none for a node not on the tailnet)."""
    status, prefs = state.tailscale_status, state.tailscale_prefs
    if status is None or prefs is None or status.get("BackendState") != "Running":
        return []
    return prefs_drift(plan.settings, prefs)


UNDONE_BY = "the deploy"
NO_SWITCH = "since nothing needs a switch here and only a switch runs the join unit's `tailscale up --reset`"
NATIVE_KEEPS = (
    'since NixOS\'s own join unit (tailnix_mode = "native") runs `tailscale up` only for a node that is not '
    "logged in"
)


def planned_drift(state: HostState, plan: HostPlan) -> str | None:
    """The plan's sentence about the node's drift, and whether this deploy undoes it; None without drift.

    The join unit's `tailscale up --reset` runs when the switch starts or restarts it, so a deploy clears
    the drift exactly when it switches; NixOS's own unit (native mode) leaves a Running node alone.
    """
    drift = _drift_of(state, plan)
    if not drift:
        return None
    if plan.settings.mode != "autoconnect":
        return drift_plan(drift, undone_by=None, kept_because=NATIVE_KEEPS)
    if not needs_switch(state, plan):
        return drift_plan(drift, undone_by=None, kept_because=NO_SWITCH)
    return drift_plan(drift, undone_by=UNDONE_BY)


def report_drift(state: HostState, plan: HostPlan) -> None:
    """While the deploy is prepared, before anything is changed: say how the node's prefs drifted.

    `pyinfra --dry` prints it for the host, and `tailnix deploy --dry` lists it (an events.PLANNED event).
    """
    sentence = planned_drift(state, plan)
    if sentence is not None and host.state.current_stage == StateStage.Prepare:
        host.log_styled(sentence, fg="yellow", log_func=logger.warning)
        events.host_planned(host.state, host.name, steps.DRIFT, sentence)


def tags_not_granted(settings: TailscaleSettings, status: dict[str, Any]) -> list[str]:
    """The `tailscale_advertise_tags` control did not grant: absent from `Self.Tags` of the node's status.

    A node's prefs can ask for a tag the tailnet policy's tagOwners do not give the key's owner; control
    refuses it, and only `Self.Tags` shows what the node carries.
    """
    granted = (status.get("Self") or {}).get("Tags") or []
    return [tag for tag in settings.advertise_tags if tag not in granted]


def _headscale_tags_hint(settings: TailscaleSettings, status: dict[str, Any]) -> str:
    """What gives a node on headscale its tags: the server (headscale v0.29.2 gives a new node its pre-auth
    key's tags and refuses those it asks for, `hscontrol/state/state.go`)."""
    own_id = str((status.get("Self") or {}).get("ID") or "")
    node = own_id if own_id.isdigit() else "<ID>"
    return (
        f": headscale gives a node the tags of its pre-auth key. Set them on the headscale server "
        f"(headscale nodes tag -i {node} -t {','.join(sorted(settings.advertise_tags))}; `tailnix deploy` "
        "runs it when tailnix_headscale_host names that server), or join with a key that carries them"
    )


def renamed(settings: TailscaleSettings, status: dict[str, Any]) -> str | None:
    """The name the tailnet gave the node when it is the wanted one with a suffix (`desk-1`); None otherwise.

    Control gives a node whose name another device of the tailnet holds (an offline one, left by a host
    reinstalled or whose /var/lib/tailscale was lost) that name with `-1`, `-2`... (`Self.DNSName`).
    """
    own = status.get("Self") or {}
    wanted = (settings.hostname or str(own.get("HostName") or "")).split(".", 1)[0].lower()
    given = str(own.get("DNSName") or "").split(".", 1)[0]
    if wanted and re.fullmatch(rf"{re.escape(wanted)}-[0-9]+", given):
        return given
    return None


def _renamed_sentence(settings: TailscaleSettings, status: dict[str, Any], given: str) -> str:
    wanted = given.rsplit("-", 1)[0]
    return (
        f"{_running_summary(status)}, but the tailnet named it {given}, not {wanted}: another device of the "
        f"tailnet holds {wanted} (this host reinstalled, or its /var/lib/tailscale lost, leaves its old device "
        "behind); delete that device in the admin console, then rename this one there (with an OAuth client, "
        "the deploy deletes an offline one before such a node joins: tailnix_replace_offline_device)"
    )


def _not_granted_sentence(missing: list[str], status: dict[str, Any]) -> str:
    granted = (status.get("Self") or {}).get("Tags") or []
    return f"control did not grant {', '.join(missing)} (the node carries {', '.join(granted) or 'no tags'})"


def _running_summary(status: dict[str, Any]) -> str:
    self_node = status.get("Self") or {}
    addresses = ", ".join(self_node.get("TailscaleIPs") or status.get("TailscaleIPs") or []) or "no IPs"
    summary = f"Tailscale is Running as {self_node.get('HostName', '?')} ({addresses})"
    health = "; ".join(str(h) for h in status.get("Health") or [])
    if health:
        summary += f"; health: {health}"
    return summary


def _undone_drift(
    settings: TailscaleSettings, prefs: dict[str, Any] | None, drifted: tuple[PrefDrift, ...]
) -> str:
    """After a switch: which of the prefs set by hand before it the join unit's `up --reset` cleared."""
    if not drifted or prefs is None:
        return ""
    left = {d.pref for d in prefs_drift(settings, prefs)}
    cleared = [f"{d.described} {d.undone}" for d in drifted if d.pref not in left]
    kept = [d.described for d in drifted if d.pref in left]
    return "".join(
        [
            f"; drift: {', '.join(cleared)}" if cleared else "",
            f"; still drifted: {', '.join(kept)}" if kept else "",
        ]
    )


def _verify(
    state: State,
    host: Host,
    settings: TailscaleSettings,
    arguments: ConnectorArguments,
    drifted: tuple[PrefDrift, ...] = (),
) -> bool:
    ok, output = host.run_shell_command(StringCommand(_poll_script(settings)), **arguments)
    sections = _sections(list(output.stdout_lines) if ok else [])
    status = _load_json(sections.get("status", ""))
    if status is None:
        return _report(
            state,
            host,
            "tailscaled is not running or does not answer `tailscale status --json`",
            False,
        )
    backend = str(status.get("BackendState", "unknown"))
    health = "; ".join(str(h) for h in status.get("Health") or [])
    poll = sections.get("poll", "")
    if backend != "Running":
        meaning = BACKEND_STATE_MEANINGS.get(backend, "an unknown state")
        message = f"Tailscale is {backend} after {settings.verify_timeout}s, not Running: {meaning}"
        if poll.startswith("login-error "):
            message = _refused_login(settings, login_error(status), poll)
        missing = tags_not_granted(settings, status)
        if missing and "are invalid or not permitted" in health:
            message += f"; {_not_granted_sentence(missing, status)}"
        if health:
            message += f". Health: {health}"
        journal = sections.get("journal", "")
        if journal:
            message += f"\n{_join_unit(settings)} journal:\n{journal}"
        return _report(state, host, message, False)
    missing = tags_not_granted(settings, status)
    if missing:
        message = f"Tailscale is Running but {_not_granted_sentence(missing, status)}"
        if settings.on_headscale:
            message += _headscale_tags_hint(settings, status)
        return _report(state, host, message, False)
    given = renamed(settings, status)
    if given is not None:
        return _report(state, host, _renamed_sentence(settings, status, given), False)
    prefs = _load_json(sections.get("prefs", ""))
    if prefs is not None:
        mismatches = prefs_mismatches(settings, prefs)
        if mismatches:
            return _report(
                state,
                host,
                "Tailscale is Running but its prefs differ: " + "; ".join(mismatches),
                False,
            )
    node_records.saw(host.name, status)
    return _report(state, host, _running_summary(status) + _undone_drift(settings, prefs, drifted), True)


def _verification(state: HostState, plan: HostPlan) -> Commands:
    status, prefs = state.tailscale_status, state.tailscale_prefs
    if (
        not needs_switch(state, plan)
        and status is not None
        and status.get("BackendState") == "Running"
        and prefs is not None
        and not prefs_mismatches(plan.settings, prefs)
        and not tags_not_granted(plan.settings, status)
        and renamed(plan.settings, status) is None
    ):
        summary = _running_summary(status)
        kept = planned_drift(state, plan)
        if kept is not None:
            summary += f"; {kept}"
        if host.state.current_stage == StateStage.Execute:
            # Reported like a verification that ran: a person reads every host's state either way.
            host.log_styled(summary, fg="green")
            events.host_said(host.state, host.name, summary)
            node_records.saw(host.name, status)

        host.noop(summary)
        return
    if not needs_switch(state, plan) and status is not None and status.get("BackendState") == "NeedsLogin":
        # Logged out or its node key expired since the last switch: no switch will run the join unit,
        # so it is started again to log in with the fleet's key (a rejected key fails as before).
        unit = (
            paths.AUTOCONNECT_UNIT if plan.settings.mode == "autoconnect" else paths.NATIVE_AUTOCONNECT_UNIT
        )
        if host.state.current_stage == StateStage.Execute:
            host.log_styled(
                f"Tailscale is NeedsLogin: logging in again with the fleet's key (restarting {unit}.service)",
                fg="yellow",
            )
        yield StringCommand("systemctl", "restart", f"{unit}.service")
    drifted = tuple(d for d in _drift_of(state, plan) if d.by_hand)
    yield FunctionCommand(_verify, (plan.settings, operation_arguments(host), drifted), {})


@operation()
def verify(plan: HostPlan) -> Commands:
    """Wait (bounded) until `tailscale status` says Running, and compare the node's prefs with the settings.

    + plan: the host's plan (its settings give the timeout and the expected prefs)

    When this run switched nothing and the node was Running with the right prefs as the run began, that
    state is reported as it is, without another round trip.
    """
    state = _readable_state()
    yield from _verification(state, plan)


@operation()
def check(plan: HostPlan) -> Commands:
    """For a host that needs no change: the checks of `preflight`, then the verification of `verify`.

    + plan: the host's plan

    A node that needs a new login (NeedsLogin: logged out, or its node key expired) has its join unit
    restarted first, which logs it in again with the fleet's key.

    One operation instead of two: pyinfra's bookkeeping of each operation costs the deployer a few
    milliseconds per host, which is most of what a redeploy to a converged fleet costs it.
    """
    state = _readable_state()
    _say_earlier_switch(state)
    require_deployable(state, plan)
    _warn_expired_key(plan)
    yield from _verification(state, plan)


logging.getLogger(__name__).addHandler(logging.NullHandler())
