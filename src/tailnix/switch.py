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
"""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import dataclass

import gevent
from pyinfra import logger
from pyinfra.api.arguments import ConnectorArguments
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.api.state import State

from tailnix import paths

JOB_DIR = f"{paths.STATE_DIR}/switch"
JOB_SCRIPT = f"{JOB_DIR}/job.sh"
RESULT_FILE = f"{JOB_DIR}/result"
LOG_FILE = f"{JOB_DIR}/log"
CONFIRM_FILE = f"{JOB_DIR}/confirm"
ALREADY_FAILED_FILE = f"{JOB_DIR}/already-failed"
JOB_UNIT = "tailnix-switch"

ABSENT_SUFFIX = ".tailnix-absent"
ABSENT_DIRECTORY_SUFFIX = ".tailnix-absent-dir"

# How long a switch itself may take before the deployer stops waiting for it (the job goes on).
SWITCH_WAIT_SECONDS = 1800
POLL_SECONDS = 1.0


def new_token() -> str:
    """A name for one switch, so that a result is never mistaken for another run's."""
    return secrets.token_hex(8)


def _restore_function() -> str:
    pending = paths.PENDING_DIR
    return f"""
restore() {{
  [ -d {pending} ] || return 0
  (cd {pending} && find . -type f) | while read -r kept; do
    target="/${{kept#./}}"
    case "$target" in
      *{ABSENT_DIRECTORY_SUFFIX}) ;;
      *{ABSENT_SUFFIX})
        rm -f "${{target%{ABSENT_SUFFIX}}}"
        if [ -d {paths.NIXOS_DIR}/.git ]; then
          relative="${{target%{ABSENT_SUFFIX}}}"
          git -C {paths.NIXOS_DIR} rm -q --cached --ignore-unmatch -- "${{relative#{paths.NIXOS_DIR}/}}" 2>/dev/null
        fi
        ;;
      *) cp -a "{pending}/${{kept#./}}" "$target" ;;
    esac
  done
  (cd {pending} && find . -type f -name '*{ABSENT_DIRECTORY_SUFFIX}') | while read -r kept; do
    target="/${{kept#./}}"
    rmdir "${{target%{ABSENT_DIRECTORY_SUFFIX}}}" 2>/dev/null
  done
  rm -rf {pending}
}}
"""


def _unit_failures_function() -> str:
    """Shell that splits switch-to-configuration's exit 4 into the units this switch made fail and the
    units that were failed before it.

    switch-to-configuration reports every unit failed at the end of a switch, also one that had failed
    before and was only retried (nixpkgs switch-to-configuration-ng src/main.rs), and a start systemd
    refused (`Failed to start UNIT: ...`, a `restartUnits` name that does not exist). A switch whose only
    failures were failed before did not cause them: it is kept.
    """
    return f"""
failed_units() {{
  systemctl list-units --state=failed --plain --no-legend 2>/dev/null | awk '{{print $1}}' | sort -u | tr '\\n' ' '
}}
split_failures() {{
  caused=""
  already=""
  reported=$(sed -n 's/^warning: the following units failed: //p' {LOG_FILE} | tr -d ',')
  refused=$(sed -n 's/^Failed to [a-z-]* \\([^:]*\\): .*/\\1/p' {LOG_FILE})
  for unit in $reported; do
    case " $failed_before " in
      *" $unit "*) already="${{already:+$already }}$unit" ;;
      *) caused="${{caused:+$caused }}$unit" ;;
    esac
  done
  for unit in $refused; do caused="${{caused:+$caused }}$unit"; done
  [ -n "$reported$refused" ] || caused="unknown units (see {LOG_FILE})"
}}
"""


def job_script(*, token: str, fingerprint: str, rebuild_command: str, confirm_timeout: int) -> str:
    """The shell script the host runs detached: switch, then wait for the confirmation or roll back."""
    return f"""#!/bin/sh
# Written by tailnix for one switch ({token}); see /var/lib/tailnix/switch/log for nixos-rebuild's output.
set -u
say() {{ printf '%s\\n' "$*" > {RESULT_FILE}.new && mv -f {RESULT_FILE}.new {RESULT_FILE}; }}
{_restore_function()}{_unit_failures_function()}
say running {token}
rm -f {ALREADY_FAILED_FILE}
if ! nix-instantiate --parse {paths.CONFIGURATION_FILE} > /dev/null 2> {LOG_FILE}; then
  restore
  say failed {token} 1 the edited configuration.nix does not parse
  exit 1
fi
before=$(readlink /run/current-system)
failed_before=$(failed_units)
{rebuild_command} > {LOG_FILE} 2>&1
status=$?
if [ "$status" -eq 4 ]; then
  split_failures
  if [ -z "$caused" ]; then
    # Only units that were failed before the switch failed again: not this deploy's doing.
    printf '%s\\n' "$already" > {ALREADY_FAILED_FILE}
    status=0
  fi
fi
if [ "$status" -ne 0 ]; then
  case "$status" in
    1) reason="the configuration did not evaluate or build" ;;
    2) reason="activation failed" ;;
    4) reason="a unit failed to start; failed in this switch: $caused${{already:+; already failed before it: $already}}" ;;
    *) reason="unexpected exit" ;;
  esac
  restore
  if [ -n "$before" ] && [ "$(readlink /run/current-system)" != "$before" ]; then
    # The new generation became active before the failure: go back to the one that ran before.
    nixos-rebuild switch --rollback >> {LOG_FILE} 2>&1
    say failed {token} "$status" "$reason; /etc/nixos restored and the previous generation switched back"
  else
    say failed {token} "$status" "$reason; /etc/nixos restored"
  fi
  exit "$status"
fi
say switched {token}
# Magic rollback: the deployer must reach the host over a new SSH connection and confirm in time.
waited=0
while [ "$(cat {CONFIRM_FILE} 2>/dev/null)" != {token} ]; do
  if [ "$waited" -ge {confirm_timeout * 2} ]; then
    restore
    nixos-rebuild switch --rollback >> {LOG_FILE} 2>&1
    say rolled-back {token} "no confirmation over a new SSH connection within {confirm_timeout}s"
    exit 1
  fi
  sleep 0.5
  waited=$((waited + 1))
done
printf '%s\\n' {fingerprint} > {paths.APPLIED_FILE}.new && mv -f {paths.APPLIED_FILE}.new {paths.APPLIED_FILE}
rm -rf {paths.PENDING_DIR}
say confirmed {token}
"""


def start_command(script: str) -> str:
    """The command that writes the job and starts it detached from this SSH session."""
    return f"""
install -d -m 0700 {JOB_DIR}
rm -f {RESULT_FILE} {CONFIRM_FILE}
cat > {JOB_SCRIPT} <<'TAILNIX_SWITCH_JOB'
{script}TAILNIX_SWITCH_JOB
chmod 0700 {JOB_SCRIPT}
systemd-run --unit={JOB_UNIT} --description="tailnix switch" --collect --quiet \\
  --setenv=PATH="$PATH" --setenv=HOME=/root /bin/sh {JOB_SCRIPT}
"""


@dataclass(frozen=True)
class SwitchOutcome:
    """How a switch ended, as the deployer saw it."""

    ok: bool
    message: str


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


def _result_for(host: Host, arguments: ConnectorArguments, token: str) -> tuple[str, str] | None:
    """The job's (state, rest of the line) for this token, or None if unknown or unreachable."""
    text = _read(host, arguments, RESULT_FILE)
    if not text:
        return None
    fields = text.strip().split(" ", 2)
    if len(fields) < 2 or fields[1] != token:
        return None
    return fields[0], fields[2] if len(fields) > 2 else ""


def await_switch(
    state: State, host: Host, token: str, confirm_timeout: int, arguments: ConnectorArguments
) -> bool:
    """Follow the detached switch to its end; confirm it over a new SSH connection.

    + arguments: the operation's connector arguments, so that these commands run as its own do (sudo)
    """
    try:
        outcome = _follow(host, arguments, token, confirm_timeout)
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
    return outcome.ok


def _failure_log(host: Host, arguments: ConnectorArguments) -> str:
    try:
        return (_read(host, arguments, LOG_FILE) or "").rstrip()
    except HostUnreadable:
        return ""


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


def _follow(host: Host, arguments: ConnectorArguments, token: str, confirm_timeout: int) -> SwitchOutcome:
    deadline = time.monotonic() + SWITCH_WAIT_SECONDS
    result = None
    while time.monotonic() < deadline:
        result = _result_for(host, arguments, token)
        if result is None and not host.connected:
            _reconnect(host)
        elif result is not None and result[0] != "running":
            break
        gevent.sleep(POLL_SECONDS)
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
        return SwitchOutcome(
            False, f"{log}\ntailnix: nixos-rebuild switch failed (exit {status}: {reason})".lstrip("\n")
        )
    # Switched: the confirmation must come over a NEW connection, proof the host can still be reached.
    confirm_deadline = time.monotonic() + confirm_timeout
    confirmed = False
    while time.monotonic() < confirm_deadline:
        if _reconnect(host):
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
