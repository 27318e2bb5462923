"""The switch, with magic rollback: it never depends on the SSH session that starts it.

The host runs the switch as a detached job (`systemd-run`), so a session cut by the new network settings
cannot kill it halfway. After a successful switch the job waits for the deployer to confirm over a NEW
SSH connection; without that confirmation in time it puts /etc/nixos back and rolls back to the previous
generation by itself. A failed switch restores /etc/nixos too, and rolls back if the new generation had
become active.

Files of the job, in /var/lib/tailnix/switch/: `job.sh`, `log` (nixos-rebuild's output), `confirm`
(written by the deployer), `already-failed` (units failed before the switch that failed again; such a
switch exit 4 is not this deploy's failure), and `result`, one line the deployer reads:
`running TOKEN`, `switched TOKEN`, `confirmed TOKEN`, `failed TOKEN STATUS REASON`, `rolled-back TOKEN REASON`.
`confirm` holds the TOKEN to confirm, or `refuse TOKEN` and a line saying why, to roll back at once (a node
that did not come back with the tags it logged in again for: tailnix.reauth).
A job stopped or killed from outside (`systemctl stop`, the OOM killer) leaves `running TOKEN` behind: the
host's wait (`switch-wait.sh`) then says `gone TOKEN`, and the deploy fails at once.
"""

from __future__ import annotations

import itertools
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from pyinfra import logger
from pyinfra.api.arguments import ConnectorArguments
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.api.state import State

from tailnix import events, host_scripts, paths

JOB_DIR = f"{paths.STATE_DIR}/switch"
JOB_SCRIPT = f"{JOB_DIR}/job.sh"
RESULT_FILE = f"{JOB_DIR}/result"
LOG_FILE = f"{JOB_DIR}/log"
CONFIRM_FILE = f"{JOB_DIR}/confirm"
ALREADY_FAILED_FILE = f"{JOB_DIR}/already-failed"
JOB_UNIT = "tailnix-switch"

ABSENT_SUFFIX = ".tailnix-absent"
ABSENT_DIRECTORY_SUFFIX = ".tailnix-absent-dir"

# switch-to-configuration's words (nixpkgs `switch-to-configuration-ng` `main.rs`): the failed units, each
# with its status and last journal lines, then the end of the failed switch.
UNITS_FAILED = "the following units failed:"
SWITCH_ERRORS = "warning: error(s) occurred while switching"

# How long a switch itself may take before the deployer stops waiting for it (the job goes on).
SWITCH_WAIT_SECONDS = 1800
POLL_SECONDS = 1.0
WAIT_WINDOW_SECONDS = 30
"""The longest the host waits for a running switch within one command, before it says how it stands."""


def new_token() -> str:
    """A name for one switch, so that a result is never mistaken for another run's."""
    return secrets.token_hex(8)


def start_command(*, token: str, fingerprint: str, flake_attr: str | None, confirm_timeout: int) -> str:
    """The command that writes the switch job (host_scripts/switch-job.sh) and starts it detached.

    + flake_attr: None for a channel-style host; for a flake host, its `nixosConfigurations` attribute
      ("" for the host's hostname)
    """
    job = (
        token,
        fingerprint,
        confirm_timeout,
        "no" if flake_attr is None else "yes",
        flake_attr or "",
        RESULT_FILE,
        LOG_FILE,
        CONFIRM_FILE,
        paths.APPLIED_FILE,
        paths.PENDING_DIR,
        paths.NIXOS_DIR,
        paths.CONFIGURATION_FILE,
        ABSENT_SUFFIX,
        ABSENT_DIRECTORY_SUFFIX,
    )
    return host_scripts.command(
        "switch-start.sh",
        JOB_DIR,
        RESULT_FILE,
        CONFIRM_FILE,
        JOB_SCRIPT,
        JOB_UNIT,
        host_scripts.text("switch-job.sh"),
        *job,
    )


@dataclass(frozen=True)
class SwitchOutcome:
    """How a switch ended, as the deployer saw it."""

    ok: bool
    message: str
    """Everything the deployer prints about the switch, line by line."""
    sentence: str = ""
    """The message's one line for a summary, when it is not the first line."""
    evidence: tuple[str, ...] | None = None
    """The lines that show why it failed, when they are not the message's other lines."""


class HostUnreadable(Exception):
    """A command that reads the job's files ran, and failed (as opposed to a connection that broke)."""


def _run(host: Host, arguments: ConnectorArguments, command: str) -> tuple[bool, list[str], list[str]]:
    """Run `command` as the operation runs its own (with its sudo); raise ConnectionError when it cannot."""
    try:
        ok, output = host.run_shell_command(StringCommand(command), **arguments)
    except Exception as error:  # a dead connection raises whatever paramiko meets
        raise ConnectionError(str(error)) from error
    return ok, list(output.stdout_lines), list(output.stderr_lines)


def _read(host: Host, arguments: ConnectorArguments, path: str) -> str | None:
    """A file's text ("" when absent); None when the host cannot be reached. Raises HostUnreadable."""
    quoted = shlex.quote(path)
    try:
        ok, stdout, stderr = _run(host, arguments, f"if [ -e {quoted} ]; then cat {quoted}; fi")
    except ConnectionError:
        return None
    if not ok:
        raise HostUnreadable(" ".join(stderr).strip() or f"reading {path} failed")
    return "\n".join(stdout)


def _reconnect(host: Host) -> bool:
    """Drop the current SSH connection and open a new one; False when the host does not answer."""
    client = getattr(host.connector, "client", None)
    try:
        if client is not None:
            client.close()
    except Exception:
        pass
    host.disconnect()
    try:
        host.connect(reason="a new SSH connection, to confirm the switch", raise_exceptions=True)
    except Exception:
        return False
    return bool(host.connected)


def _result_for(
    host: Host, arguments: ConnectorArguments, token: str, wait: int = 0
) -> tuple[str, str] | None:
    """The job's (state, rest of the line) for this token, or None if unknown or unreachable.

    + wait: seconds the host waits first while the job is running (host_scripts/switch-wait.sh)
    """
    text = _waited_result(host, arguments, token, wait) if wait > 0 else _read(host, arguments, RESULT_FILE)
    if not text:
        return None
    fields = text.strip().split(" ", 2)
    if len(fields) < 2 or fields[1] != token:
        return None
    return fields[0], fields[2] if len(fields) > 2 else ""


def _waited_result(host: Host, arguments: ConnectorArguments, token: str, wait: int) -> str | None:
    """The result line once the job no longer runs, or after `wait` seconds; None when unreachable."""
    try:
        ok, stdout, stderr = _run(
            host, arguments, host_scripts.command("switch-wait.sh", RESULT_FILE, token, wait, JOB_UNIT)
        )
    except ConnectionError:
        return None
    if not ok:
        raise HostUnreadable(" ".join(stderr).strip() or f"reading {RESULT_FILE} failed")
    return "\n".join(stdout)


@dataclass(frozen=True)
class ConfirmCheck:
    """What must hold on the host before its switch is confirmed, beyond a new SSH connection.

    + before: run over the new connection once the switch has ended; the reason to refuse the switch
      (the host then rolls back at once), or None to confirm it
    + after_rollback: run once a refused switch was rolled back; a sentence on how the host came back
    """

    before: Callable[[Host], str | None]
    after_rollback: Callable[[Host], str]


def await_switch(
    state: State,
    host: Host,
    token: str,
    confirm_timeout: int,
    arguments: ConnectorArguments,
    check: ConfirmCheck | None = None,
) -> bool:
    """Follow the detached switch to its end; confirm it over a new SSH connection.

    + arguments: the operation's connector arguments, so that these commands run as its own do (sudo)
    + check: what must also hold before the switch is confirmed (a node that logged in again)
    """
    try:
        outcome = _follow(host, arguments, token, confirm_timeout, check)
    except HostUnreadable as error:
        outcome = SwitchOutcome(
            False,
            f"cannot read the switch's result on the host ({error}), so it was not confirmed; the host "
            f"rolls itself back to its previous configuration {confirm_timeout}s after the switch ends",
        )
    for line in outcome.message.splitlines():
        host.log_styled(
            line, fg="green" if outcome.ok else "red", log_func=logger.info if outcome.ok else logger.error
        )
    events.host_said(
        state, host.name, outcome.sentence or outcome.message, lines=outcome.evidence, switched=outcome.ok
    )
    return outcome.ok


def _failure_log(host: Host, arguments: ConnectorArguments) -> str:
    try:
        return (_read(host, arguments, LOG_FILE) or "").rstrip()
    except HostUnreadable:
        return ""


def _error_lines(log: str) -> tuple[str, ...]:
    """The lines of nixos-rebuild's output that say why it failed, for a summary.

    From Nix's first `error:` line when there is one (an evaluation or build error); for units that failed,
    switch-to-configuration's `the following units failed:` line and the end of their status, whose journal
    says why (the rollback's own output comes after it); otherwise its last lines (an activation ends the
    output).
    """
    lines = [line for line in log.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.lstrip().startswith("error")), None)
    if first is not None:
        return tuple(lines[first : first + events.MAX_LINES])
    failed = next((i for i, line in enumerate(lines) if UNITS_FAILED in line), None)
    if failed is not None:
        status = list(
            itertools.takewhile(lambda line: not line.startswith(SWITCH_ERRORS), lines[failed + 1 :])
        )
        if status:
            return (lines[failed], *status[-(events.MAX_LINES - 1) :])
    return tuple(lines[-events.MAX_LINES :])


def _already_failed(host: Host, arguments: ConnectorArguments) -> str:
    """A line naming the units that were failed before the switch and failed again, if any."""
    try:
        units = (_read(host, arguments, ALREADY_FAILED_FILE) or "").split()
    except HostUnreadable:
        return ""
    if not units:
        return ""
    verb = "was" if len(units) == 1 else "were"
    return (
        f"\n{', '.join(units)} {verb} already failed before the switch and failed again; "
        "not caused by this deploy, which is kept"
    )


def _refuse(host: Host, arguments: ConnectorArguments, token: str, reason: str) -> bool:
    """Tell the job to roll back now, and why (one line); False when the host could not be told."""
    answer = f"refuse {token}\n{' '.join(reason.split())}\n"
    try:
        ok, _, _ = _run(host, arguments, f"printf '%s' {shlex.quote(answer)} > {CONFIRM_FILE}")
    except ConnectionError:
        return False
    return ok


def _follow(
    host: Host,
    arguments: ConnectorArguments,
    token: str,
    confirm_timeout: int,
    check: ConfirmCheck | None = None,
) -> SwitchOutcome:
    deadline = time.monotonic() + SWITCH_WAIT_SECONDS
    result = None
    while time.monotonic() < deadline:
        # The host waits while the job runs, a window at a time: a poll per second over SSH cost the
        # deployer a command per second and host, and a lab's switches get longer as its fleet grows.
        window = min(WAIT_WINDOW_SECONDS, max(1, int(deadline - time.monotonic())))
        result = _result_for(host, arguments, token, wait=window)
        if result is None and not host.connected:
            _reconnect(host)
        elif result is not None and result[0] != "running":
            break
        gevent.sleep(POLL_SECONDS)
    if result is not None and result[0] == "gone":
        gone = (
            f"the switch job ({JOB_UNIT}) ended without a result: it was stopped or killed before it finished"
        )
        return SwitchOutcome(
            False,
            f"{gone}, so this deploy did not confirm the switch. The host may be on the new generation or the "
            f"old one, with /etc/nixos edited (its originals kept for a restore); see {LOG_FILE} and "
            f"`journalctl -u {JOB_UNIT}`. The next deploy reads the host afresh and switches again",
            sentence=f"{gone}; this deploy did not confirm the switch (see {LOG_FILE}, `journalctl -u {JOB_UNIT}`)",
            evidence=_error_lines(_failure_log(host, arguments)),
        )
    if result is None or result[0] == "running":
        return SwitchOutcome(
            False,
            f"the switch did not finish within {SWITCH_WAIT_SECONDS}s, so this deploy stopped waiting and "
            f"will not confirm it; it goes on on the host ({LOG_FILE}), which rolls itself back to its "
            f"previous configuration {confirm_timeout}s after the switch ends",
        )
    if result[0] == "failed":
        status, _, reason = result[1].partition(" ")
        log = _failure_log(host, arguments)
        failure = f"nixos-rebuild switch failed (exit {status}: {reason})"
        return SwitchOutcome(
            False, f"{log}\ntailnix: {failure}".lstrip("\n"), sentence=failure, evidence=_error_lines(log)
        )
    # Switched: the confirmation must come over a NEW connection, proof the host can still be reached.
    confirm_deadline = time.monotonic() + confirm_timeout
    confirmed = False
    refusal = None
    while time.monotonic() < confirm_deadline:
        if _reconnect(host):
            if check is not None:
                try:
                    refusal = check.before(host)
                except Exception:  # a dead connection raises whatever paramiko meets: try again
                    gevent.sleep(POLL_SECONDS)
                    continue
            if refusal is not None:
                if _refuse(host, arguments, token, refusal):
                    break
                gevent.sleep(POLL_SECONDS)
                continue
            try:
                ok, _, _ = _run(host, arguments, f"printf '%s\\n' {shlex.quote(token)} > {CONFIRM_FILE}")
            except ConnectionError:
                ok = False
            if ok:
                confirmed = True
                break
        gevent.sleep(POLL_SECONDS)
    # Either way, the job has the last word: wait for it (it rolls back by itself without confirmation).
    final_deadline = time.monotonic() + confirm_timeout + 60
    while time.monotonic() < final_deadline:
        final = _result_for(host, arguments, token)
        if final is None:
            if not _reconnect(host):
                gevent.sleep(POLL_SECONDS)
            continue
        if final[0] == "confirmed":
            return SwitchOutcome(
                True, "switched, and confirmed over a new SSH connection" + _already_failed(host, arguments)
            )
        if final[0] == "rolled-back" and refusal is not None and check is not None:
            try:
                back = check.after_rollback(host)
            except Exception:  # a dead connection raises whatever paramiko meets
                back = "its Tailscale state could not be read after the rollback"
            return SwitchOutcome(
                False,
                f"{refusal}\nrolled back: the host is back on its previous configuration, /etc/nixos "
                f"restored; {back}",
                sentence=f"{refusal}; rolled back: {back}",
            )
        if final[0] == "rolled-back":
            return SwitchOutcome(
                False,
                f"rolled back: {final[1]}; the host is back on its previous configuration, /etc/nixos restored",
            )
        gevent.sleep(POLL_SECONDS)
    if confirmed:
        return SwitchOutcome(
            False,
            f"confirmed, but the host did not report the end of the switch within {confirm_timeout + 60}s; "
            f"see {RESULT_FILE} there",
        )
    return SwitchOutcome(
        False,
        f"the host could not be reached over a new SSH connection after the switch; it rolls itself back "
        f"{confirm_timeout}s after the switch",
    )
