"""The emulated `systemd-run` of a lab host: run a command as a transient service, detached.

The subset a deployer uses to keep a job alive when its SSH session drops:

    systemd-run [--unit=NAME] [--description=TEXT] [--collect] [--no-block | --wait] [--quiet]
                [--property=NAME=VALUE]... [--setenv=NAME[=VALUE]]... [--service-type=TYPE]
                [--remain-after-exit] COMMAND [ARGS...]

As with the real one, the job is not a child of the caller: it runs in a session of its own with
stdin, stdout and stderr away from the caller (its output goes to the unit's journal), so the SSH
command returns at once and closing the SSH session does not touch it. The unit is run by the same
supervisor as the configuration's units (`units`), so `systemctl is-active|status|stop` and
`journalctl -u` see it. Its definition lives in `/run/systemd/transient/NAME.service.json`, never
among the configuration's units, so a `nixos-rebuild switch` run by the job does not stop it.

A transient unit is unloaded once it is inactive, or failed with `--collect`; until then a second
`systemd-run --unit=NAME` is refused with the real message. Options the lab does not emulate
(`--scope`, `--pty`, `--pipe`, timers, `--user`, ...) are refused, never ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailnix_lab.emulator import units
from tailnix_lab.emulator.hostroot import host_path

SYSTEMD_VERSION = "258"
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin")
"""systemd's compiled-in search path: for a command given without a `/`, and the job's PATH."""
EXIT_EXCEPTION = 255
"""What `--wait` returns when the job was killed by a signal."""
POLL_SECONDS = 0.05

SERVICE_TYPES = ("simple", "exec", "forking", "oneshot", "dbus", "notify", "notify-reload", "idle")
EMULATED_SERVICE_TYPES = ("simple", "exec", "oneshot")

EMULATED_PROPERTIES = {
    "Type",
    "RemainAfterExit",
    "TimeoutStartSec",
    "TimeoutSec",
    "Restart",
    "RestartSec",
    "Environment",
    "UMask",
    "RuntimeDirectory",
    "StateDirectory",
    "CollectMode",
    "Description",
}
REAL_PROPERTIES = {
    "RuntimeMaxSec", "KillMode", "KillSignal", "WorkingDirectory", "User", "Group", "Nice",
    "StandardInput", "StandardOutput", "StandardError", "SuccessExitStatus", "ExecStartPre",
    "ExecStartPost", "ExecStop", "ExecStopPost", "After", "Before", "Wants", "Requires", "BindsTo",
    "Conflicts", "PartOf", "Slice", "MemoryMax", "CPUQuota", "TasksMax", "LimitNOFILE", "PrivateTmp",
    "ProtectSystem", "ProtectHome", "NoNewPrivileges", "DynamicUser", "SendSIGHUP", "TimeoutStopSec",
    "JobTimeoutSec", "ExitType", "NotifyAccess", "StartLimitBurst", "StartLimitIntervalSec",
    "SyslogIdentifier", "LogExtraFields", "AddRef", "OnFailure", "OnSuccess", "EnvironmentFile",
    "PassEnvironment", "IgnoreSIGPIPE", "CPUWeight", "IOWeight", "Delegate", "RestartPreventExitStatus",
}  # fmt: skip
"""Real unit properties the lab does not emulate: refused with a clear message, not ignored."""

NOT_EMULATED_OPTIONS = {
    "--scope", "--user", "--system", "--capsule", "-C", "--host", "-H", "--machine", "-M", "--slice",
    "--slice-inherit", "--expand-environment", "--send-sighup", "--uid", "--gid", "--nice",
    "--working-directory", "--same-dir", "-d", "--pty", "--tty", "-t", "--pipe", "-P", "--shell", "-S",
    "--json", "--job-mode", "--ignore-failure", "--background", "--path-property", "--socket-property",
    "--timer-property", "--on-active", "--on-boot", "--on-startup", "--on-unit-active",
    "--on-unit-inactive", "--on-calendar", "--on-timezone-change", "--on-clock-change",
}  # fmt: skip

EXIT_STATUS_NAMES = {
    0: "SUCCESS",
    1: "FAILURE",
    2: "INVALIDARGUMENT",
    3: "NOTIMPLEMENTED",
    4: "NOPERMISSION",
    5: "NOTINSTALLED",
    6: "NOTCONFIGURED",
    7: "NOTRUNNING",
    203: "EXEC",
}

UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+")

HELP = """\
systemd-run [OPTIONS...] COMMAND [ARGUMENTS...]

Run the specified command in a transient scope or service.

  -h --help                       Show this help
     --version                    Show package version
     --no-ask-password            Do not prompt for password
  -u --unit=UNIT                  Run under the specified unit name
  -p --property=NAME=VALUE        Set service or scope unit property
     --description=TEXT           Description for unit
     --no-block                   Do not wait until operation finished
  -r --remain-after-exit          Leave service around until explicitly stopped
     --wait                       Wait until service stopped again
     --service-type=TYPE          Service type
  -E --setenv=NAME[=VALUE]        Set environment variable
  -q --quiet                      Suppress information messages during runtime
  -G --collect                    Unload unit after it ran, even when failed

(the lab's systemd-run: other options of the real one are refused)
"""


class Refused(Exception):
    """systemd-run stops with this message and exit code 1."""


@dataclass
class Options:
    """A parsed `systemd-run` command line."""

    unit: str | None = None
    description: str | None = None
    collect: bool = False
    no_block: bool = False
    wait: bool = False
    quiet: bool = False
    remain_after_exit: bool = False
    service_type: str | None = None
    properties: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    show_help: bool = False
    show_version: bool = False


_WITH_VALUE = {
    "--unit": "unit",
    "-u": "unit",
    "--description": "description",
    "--property": "property",
    "-p": "property",
    "--setenv": "setenv",
    "-E": "setenv",
    "--service-type": "service-type",
}
_FLAGS = {
    "--collect": "collect",
    "-G": "collect",
    "--no-block": "no_block",
    "--wait": "wait",
    "--quiet": "quiet",
    "-q": "quiet",
    "--remain-after-exit": "remain_after_exit",
    "-r": "remain_after_exit",
    "--help": "show_help",
    "-h": "show_help",
    "--version": "show_version",
}


def _take_value(options: Options, name: str, value: str) -> None:
    kind = _WITH_VALUE[name]
    if kind == "unit":
        options.unit = value
    elif kind == "description":
        options.description = value
    elif kind == "property":
        options.properties.append(value)
    elif kind == "setenv":
        options.environment.append(value)
    else:
        options.service_type = value


def _split_short(arg: str) -> list[str]:
    """`-qG` is `-q -G`; `-uNAME` is `-u NAME`."""
    parts: list[str] = []
    rest = arg[1:]
    while rest:
        option = "-" + rest[0]
        rest = rest[1:]
        if option in _WITH_VALUE:
            parts.append(option)
            if rest:
                parts.append(rest)
            break
        parts.append(option)
    return parts


def parse_args(argv: list[str]) -> Options:
    """Parse like getopt with `+`: options stop at the first argument that is not one."""
    options = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            args.insert(0, arg)
            break
        if not arg.startswith("--") and len(arg) > 2:
            args[:0] = _split_short(arg)
            continue
        name, has_value, value = arg.partition("=")
        if name in NOT_EMULATED_OPTIONS:
            raise Refused(f"the lab's systemd-run does not emulate {name}")
        if name == "--no-ask-password":
            continue
        if name in _FLAGS:
            if has_value:
                raise Refused(f"systemd-run: option '{name}' doesn't allow an argument")
            setattr(options, _FLAGS[name], True)
            continue
        if name in _WITH_VALUE:
            if not has_value:
                if not args:
                    if name.startswith("--"):
                        raise Refused(f"systemd-run: option '{name}' requires an argument")
                    raise Refused(f"systemd-run: option requires an argument -- '{name[1]}'")
                value = args.pop(0)
            _take_value(options, name, value)
            continue
        if name.startswith("--"):
            raise Refused(f"systemd-run: unrecognized option '{name}'")
        raise Refused(f"systemd-run: invalid option -- '{name[1:]}'")
    options.command = args
    return options


def check_options(options: Options) -> None:
    """The real one's checks of a command line, with its messages."""
    if not options.command:
        raise Refused("Command line to execute required.")
    if options.wait and options.no_block:
        raise Refused("--wait may not be combined with --no-block.")
    if options.service_type is not None:
        if options.service_type not in SERVICE_TYPES:
            raise Refused(
                f"Failed to start transient service unit: Invalid service type: {options.service_type}"
            )
        if options.service_type not in EMULATED_SERVICE_TYPES:
            raise Refused(f"the lab's systemd-run does not emulate --service-type={options.service_type}")


def service_name(unit: str | None) -> str:
    """`NAME` or `NAME.service` as the unit `NAME.service`; a random `run-r...` one when unnamed."""
    if unit is None:
        return f"run-r{os.urandom(16).hex()}.service"
    if unit.endswith(".service"):
        stem = unit[: -len(".service")]
    elif "." in unit.rsplit("@", 1)[-1] and unit.rsplit(".", 1)[-1] in (
        "scope", "timer", "socket", "path", "mount", "target", "slice", "device", "swap", "automount",
    ):  # fmt: skip
        raise Refused(f"Failed to start transient service unit: Unit name {unit} is not a service")
    else:
        stem = unit
    if not stem or not UNIT_NAME.fullmatch(stem) or stem.endswith("@"):
        raise Refused("Failed to mangle unit name: Invalid argument")
    return f"{stem}.service"


def build_definition(options: Options) -> tuple[dict[str, Any], bool]:
    """The transient unit's definition (as `units.ServiceUnit` reads it) and its CollectMode."""
    service_config: dict[str, Any] = {"Type": options.service_type or "simple"}
    if options.remain_after_exit:
        service_config["RemainAfterExit"] = True
    environment: dict[str, str] = {"PATH": ":".join(SEARCH_PATH)}
    description = options.description
    collect = options.collect
    for assignment in options.properties:
        name, has_value, value = assignment.partition("=")
        if not has_value:
            raise Refused(f"Not an assignment: {assignment}")
        if name not in EMULATED_PROPERTIES:
            if name in REAL_PROPERTIES:
                raise Refused(f"the lab's systemd-run does not emulate the property {name}=")
            raise Refused(f"Unknown assignment: {assignment}")
        try:
            if name == "CollectMode":
                if value not in ("inactive", "inactive-or-failed"):
                    raise ValueError(value)
                collect = value == "inactive-or-failed"
            elif name == "Description":
                description = value
            elif name == "Type":
                check_options(Options(command=["x"], service_type=value))
                service_config["Type"] = value
            elif name == "RemainAfterExit":
                service_config[name] = units.parse_boolean(value)
            elif name in ("TimeoutStartSec", "TimeoutSec", "RestartSec"):
                units.parse_timespan(value)
                service_config["TimeoutStartSec" if name == "TimeoutSec" else name] = value
            elif name == "Restart":
                if value not in (
                    "no",
                    "on-success",
                    "on-failure",
                    "on-abnormal",
                    "on-abort",
                    "on-watchdog",
                    "always",
                ):
                    raise ValueError(value)
                service_config[name] = value
            elif name == "UMask":
                int(value, 8)
                service_config[name] = value
            elif name == "Environment":
                for word in shlex.split(value):
                    key, sep, item = word.partition("=")
                    if not sep or not key:
                        raise ValueError(word)
                    environment[key] = item
            else:
                service_config[name] = value
        except ValueError:
            raise Refused(f"Failed to parse {name}= value: {value}") from None
    for setting in options.environment:
        key, sep, value = setting.partition("=")
        if not sep:
            # `--setenv=NAME` passes the caller's value on, and nothing when it has none.
            if key not in os.environ:
                continue
            value = os.environ[key]
        if not key:
            raise Refused(f"Invalid environment assignment: {setting}")
        environment[key] = value
    command = resolve_command(options.command, environment["PATH"])
    service_config["ExecStart"] = shlex.join(command)
    definition = {
        "description": description or shlex.join(options.command),
        "serviceConfig": service_config,
        "environment": environment,
    }
    return definition, collect


def resolve_command(command: list[str], path: str) -> list[str]:
    """An executable named without `/` is looked up in the search path (the lab's host paths)."""
    if "/" in command[0]:
        return command
    for directory in path.split(":"):
        candidate = host_path(directory) / command[0] if directory.startswith("/") else None
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return [f"{directory}/{command[0]}", *command[1:]]
    return command


# --- the transient unit on the host ------------------------------------------------------------


def transient_dir() -> Path:
    """Where this host keeps its transient units (`/run/systemd/transient`)."""
    return host_path(units.TRANSIENT_DIR)


@contextlib.contextmanager
def transient_lock() -> Iterator[None]:
    """Serialise creating and unloading transient units."""
    directory = transient_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _state_file(unit: str) -> Path:
    return units.units_dir() / f"{unit}.state.json"


def still_loaded(unit: str, collect: bool) -> bool:
    """A transient unit stays loaded while it runs, stays active, or failed without CollectMode."""
    active_state = units.read_state(unit).get("ActiveState")
    if active_state in (units.ACTIVE, units.ACTIVATING, units.DEACTIVATING):
        return True
    return active_state == units.FAILED and not collect


def unload(unit: str) -> None:
    """Forget a finished transient unit (its journal stays)."""
    (transient_dir() / f"{unit}.json").unlink(missing_ok=True)
    _state_file(unit).unlink(missing_ok=True)


def collect_mode(unit: str) -> bool | None:
    """The CollectMode of a loaded transient unit (True: inactive-or-failed); None if none is loaded."""
    try:
        payload = json.loads((transient_dir() / f"{unit}.json").read_text())
    except (OSError, ValueError):
        return None
    return bool(payload.get("collect"))


def _pin_file(unit: str) -> Path:
    return transient_dir() / f".{unit}.ref"


def pinned(unit: str) -> bool:
    """Whether a `--wait` caller still holds the unit (systemd-run's AddRef)."""
    try:
        pid = int(_pin_file(unit).read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def release(unit: str) -> None:
    """Drop a `--wait` caller's hold, and unload the unit if nothing else keeps it."""
    with transient_lock():
        _pin_file(unit).unlink(missing_ok=True)
        loaded_collect = collect_mode(unit)
        if loaded_collect is not None and not still_loaded(unit, loaded_collect):
            unload(unit)


def register(unit: str, definition: dict[str, Any], collect: bool, *, pin: bool) -> None:
    """Create the transient unit, refusing a name that is taken as systemd does.

    + pin: hold the unit loaded after it ends, until `release` (for `--wait`, which reads its result)
    """
    taken = f"Failed to start transient service unit: Unit {unit} was already loaded or has a fragment file."
    with transient_lock():
        if (units.units_dir() / f"{unit}.json").exists():
            raise Refused(taken)
        loaded_collect = collect_mode(unit)
        if loaded_collect is not None:
            if still_loaded(unit, loaded_collect):
                raise Refused(taken)
            unload(unit)
        payload = {"name": unit[: -len(".service")], "definition": definition, "collect": collect}
        (transient_dir() / f"{unit}.json").write_text(json.dumps(payload, indent=2) + "\n")
        _state_file(unit).unlink(missing_ok=True)
        _pin_file(unit).unlink(missing_ok=True)
        if pin:
            _pin_file(unit).write_text(f"{os.getpid()}\n")
        units.write_state(unit, ActiveState=units.ACTIVATING, SubState="start-pre", Result="success")


def run_detached(unit: str, collect: bool) -> None:
    """Start the unit's supervisor in a session of its own, holding nothing of the caller's."""
    pid = os.fork()
    if pid != 0:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 65536)
            os.chdir("/")
            supervise(unit, collect)
    finally:
        os._exit(0)


def supervise(unit: str, collect: bool) -> None:
    """Run the unit to its end with the units' supervisor, then unload it as systemd would."""
    service = units.load_definition(unit)
    if service is None:
        return
    command = shlex.split(service.setting("ExecStart", ""))
    if not command or not command[0].startswith("/") or not host_path(command[0]).is_file():
        fail_to_exec(unit, command[0] if command else "")
    else:
        units.supervise(unit)
    with transient_lock():
        if not still_loaded(unit, collect) and not pinned(unit):
            unload(unit)


def fail_to_exec(unit: str, executable: str) -> None:
    """What systemd logs and records when the unit's executable cannot be found."""
    units.systemd_log(unit, f"{unit}: Unable to locate executable '{executable}': No such file or directory")
    units.systemd_log(unit, f"{unit}: Failed at step EXEC spawning {executable}: No such file or directory")
    units.systemd_log(unit, f"{unit}: Main process exited, code=exited, status=203/EXEC")
    units.systemd_log(unit, f"{unit}: Failed with result 'exit-code'.")
    units.write_state(
        unit,
        ActiveState=units.FAILED,
        SubState="failed",
        Result="exit-code",
        ExecMainCode=1,
        ExecMainStatus=203,
    )


# --- what the caller sees ----------------------------------------------------------------------


def wait_for_start_job(unit: str, service_type: str) -> dict[str, Any]:
    """Block until the start job is done: at once for simple, after the exec for exec, at the end for oneshot."""
    while True:
        state = units.read_state(unit)
        if state.get("ActiveState") != units.ACTIVATING:
            return state
        if service_type != "oneshot" and state.get("SubState") == "start":
            return state
        time.sleep(POLL_SECONDS)


def wait_until_stopped(unit: str) -> dict[str, Any]:
    """Block until the unit is inactive or failed (or unloaded)."""
    while True:
        state = units.read_state(unit)
        if state.get("ActiveState") in (units.INACTIVE, units.FAILED):
            return state
        time.sleep(POLL_SECONDS)


def report_wait(state: dict[str, Any], started: float, quiet: bool) -> int:
    """`--wait`'s closing lines, and the job's exit status as systemd-run's own."""
    result = str(state.get("Result") or "success")
    code = int(state.get("ExecMainCode") or 0)
    status = int(state.get("ExecMainStatus") or 0)
    if not quiet:
        lines = [f"Finished with result: {result}"]
        if code == 1:
            lines.append(
                f"Main processes terminated with: code=exited, status={status}/{EXIT_STATUS_NAMES.get(status, 'n/a')}"
            )
        elif code == 2:
            name = signal.Signals(status).name[3:] if status in signal.valid_signals() else str(status)
            lines.append(f"Main processes terminated with: code=killed, status={status}/{name}")
        lines.append(f"Service runtime: {_timespan(time.time() - started)}")
        sys.stderr.write("".join(line + "\n" for line in lines))
    if result == "success":
        return 0
    if result == "exit-code" and status > 0:
        return status
    if result == "signal":
        return EXIT_EXCEPTION
    return 1


def _timespan(seconds: float) -> str:
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def main(argv: list[str]) -> int:
    """Run `systemd-run ARGS`."""
    try:
        options = parse_args(argv)
        if options.show_help:
            sys.stdout.write(HELP)
            return 0
        if options.show_version:
            print(f"systemd {SYSTEMD_VERSION} ({SYSTEMD_VERSION})")
            return 0
        check_options(options)
        unit = service_name(options.unit)
        definition, collect = build_definition(options)
        register(unit, definition, collect, pin=options.wait)
    except Refused as refusal:
        sys.stderr.write(f"{refusal}\n")
        return 1
    started = time.time()
    invocation = os.urandom(16).hex()
    run_detached(unit, collect)
    service_type = str(definition["serviceConfig"]["Type"])
    try:
        if not options.no_block:
            state = wait_for_start_job(unit, service_type)
            if state.get("ActiveState") == units.FAILED and service_type != "simple":
                sys.stderr.write(
                    f"Job for {unit} failed because the control process exited with error code.\n"
                    f'See "systemctl status {unit}" and "journalctl -xeu {unit}" for details.\n'
                )
                return 1
        if not options.quiet:
            sys.stderr.write(f"Running as unit: {unit}; invocation ID: {invocation}\n")
        if options.wait:
            return report_wait(wait_until_stopped(unit), started, options.quiet)
        return 0
    finally:
        if options.wait:
            release(unit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
