"""systemd services of a lab host: what systemd would do with a NixOS `systemd.services.<name>`.

A unit runs its own generated script under bash, as NixOS wraps it (`#!bash` + `set -e`), in a
clean environment like systemd's: `PATH` from the unit's `path`, its `environment` and
`serviceConfig.Environment`, `RuntimeDirectory`, `StateDirectory`, `UMask`. `Type` oneshot,
simple/exec and notify, `RemainAfterExit`, `TimeoutStartSec` (90 s by default) and `Restart` behave as
systemd's. Every unit is watched by a small supervisor process that writes the unit's state to
`/run/systemd/emulated-units/UNIT.state.json` and its output to the journal
(`/var/log/tailnix-lab/journal/UNIT.log`), so `systemctl` and `journalctl` can look at it later.

`tailscaled.service` is the real daemon's unit, not a script: starting it starts the emulated
daemon (`tailnix_lab.emulator.tailscaled`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailnix_lab.emulator import tailscaled
from tailnix_lab.emulator.hostroot import host_path

UNITS_DIR = "/run/systemd/emulated-units"
TRANSIENT_DIR = "/run/systemd/transient"
"""Transient units of `systemd-run` (see `systemd_run`); never part of a configuration."""
JOURNAL_DIR = "/var/log/tailnix-lab/journal"
SYSTEM_SW = "/run/current-system/sw"
DEFAULT_TIMEOUT_START_SEC = 90.0
DEFAULT_RESTART_SEC = 0.1
DEFAULT_START_LIMIT_BURST = 5
DEFAULT_START_LIMIT_INTERVAL_SEC = 10.0
POLL_SECONDS = 0.05
DAEMON_UNITS = {"tailscaled.service"}

ACTIVE = "active"
INACTIVE = "inactive"
ACTIVATING = "activating"
FAILED = "failed"
DEACTIVATING = "deactivating"


@dataclass(frozen=True)
class ServiceUnit:
    """One `systemd.services.<name>` of the evaluated configuration."""

    name: str
    definition: dict[str, Any]

    @property
    def unit(self) -> str:
        """The unit's full name, `NAME.service`."""
        return f"{self.name}.service"

    @property
    def description(self) -> str:
        """What systemd calls the unit in its messages."""
        return str(self.definition.get("description") or self.unit)

    def list_of(self, key: str) -> list[str]:
        """A unit-name list option (`after`, `wants`, ...)."""
        return [str(item) for item in self.definition.get(key) or []]

    @property
    def service_config(self) -> dict[str, Any]:
        """The `[Service]` section as NixOS merged it."""
        return dict(self.definition.get("serviceConfig") or {})

    def setting(self, key: str, default: str) -> str:
        """One `[Service]` setting as a string (the last one wins, as in systemd)."""
        value = self.service_config.get(key)
        if value is None:
            return default
        if isinstance(value, list):
            return str(value[-1]) if value else default
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    @property
    def service_type(self) -> str:
        """`Type=`: simple unless set."""
        return self.setting("Type", "simple")

    @property
    def remain_after_exit(self) -> bool:
        """`RemainAfterExit=`."""
        return parse_boolean(self.setting("RemainAfterExit", "no"))

    @property
    def wanted_by_multi_user(self) -> bool:
        """True when `multi-user.target` pulls the unit in at boot and at every switch."""
        targets = self.list_of("wantedBy") + self.list_of("requiredBy")
        return "multi-user.target" in targets

    @property
    def definition_hash(self) -> str:
        """Stands for the unit file's store path: any change to the definition changes it."""
        blob = json.dumps(self.definition, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def parse_boolean(value: str) -> bool:
    """systemd's boolean syntax."""
    lowered = value.strip().lower()
    if lowered in ("1", "yes", "y", "true", "t", "on"):
        return True
    if lowered in ("0", "no", "n", "false", "f", "off"):
        return False
    raise ValueError(f"Failed to parse boolean value: {value}")


_TIMESPAN_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def parse_timespan(value: str) -> float | None:
    """A systemd time span (`90`, `1min 30s`, `500ms`) in seconds; None for `infinity`."""
    text = value.strip()
    if text == "infinity":
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if unit not in _TIMESPAN_UNITS:
            raise ValueError(f"Failed to parse time span: {value}")
        total += float(number) * _TIMESPAN_UNITS[unit]
    return total


# -- state on the host ------------------------------------------------------------------------


def units_dir() -> Path:
    """Where unit definitions and states live on this host (in /run: gone after a reboot)."""
    return host_path(UNITS_DIR)


def journal_path(unit: str) -> Path:
    """The journal file of one unit."""
    return host_path(JOURNAL_DIR) / f"{unit}.log"


def read_state(unit: str) -> dict[str, Any]:
    """The unit's last recorded state; an unknown unit is inactive (dead)."""
    try:
        state: dict[str, Any] = json.loads((units_dir() / f"{unit}.state.json").read_text())
    except (OSError, ValueError):
        return {"ActiveState": INACTIVE, "SubState": "dead", "Result": "success"}
    return state


def write_state(unit: str, **fields: Any) -> None:
    """Record the unit's state atomically (its supervisor and systemctl both write it)."""
    directory = units_dir()
    directory.mkdir(parents=True, exist_ok=True)
    state = read_state(unit)
    state.update(fields)
    state["StateChangeTimestamp"] = time.time()
    tmp = directory / f".{unit}.state.{os.getpid()}"
    tmp.write_text(json.dumps(state) + "\n")
    os.replace(tmp, directory / f"{unit}.state.json")


def save_definition(service: ServiceUnit) -> None:
    """Install the unit file: what `systemctl start` will run."""
    directory = units_dir()
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"name": service.name, "definition": service.definition}
    (directory / f"{service.unit}.json").write_text(json.dumps(payload, indent=2) + "\n")


def remove_definition(unit: str) -> None:
    """Remove an installed unit file (the unit left the configuration).

    A stopped unit without a file is unloaded at the daemon-reload: systemd forgets its state, so a
    configuration that brings it back starts it as a new unit.
    """
    (units_dir() / f"{unit}.json").unlink(missing_ok=True)
    if read_state(unit).get("ActiveState") not in (ACTIVE, ACTIVATING):
        (units_dir() / f"{unit}.state.json").unlink(missing_ok=True)


def load_definition(unit: str) -> ServiceUnit | None:
    """The installed unit (or a transient one of `systemd-run`), or None when no such unit is loaded."""
    for directory in (units_dir(), host_path(TRANSIENT_DIR)):
        try:
            payload = json.loads((directory / f"{unit}.json").read_text())
        except (OSError, ValueError):
            continue
        return ServiceUnit(name=payload["name"], definition=payload["definition"])
    return None


def installed_units() -> list[str]:
    """Every installed unit."""
    directory = units_dir()
    if not directory.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in directory.glob("*.service.json"))


def loaded_units() -> list[str]:
    """Every unit systemd would list: installed ones and transient ones of `systemd-run`."""
    transient = host_path(TRANSIENT_DIR)
    names = set(installed_units())
    if transient.is_dir():
        names.update(p.name[: -len(".json")] for p in transient.glob("*.service.json"))
    return sorted(names)


def failed_units() -> list[str]:
    """The loaded units in the failed state (`systemctl list-units --state=failed`)."""
    return [unit for unit in loaded_units() if read_state(unit).get("ActiveState") == FAILED]


def reset_failed() -> None:
    """`systemctl reset-failed`: failed units become inactive; a failed transient unit is unloaded."""
    for unit in failed_units():
        write_state(unit, ActiveState=INACTIVE, SubState="dead", Result="success")
        (host_path(TRANSIENT_DIR) / f"{unit}.json").unlink(missing_ok=True)


def unit_name(argument: str) -> str:
    """`foo` and `foo.service` both name `foo.service`."""
    return argument if "." in argument else f"{argument}.service"


# -- the journal ------------------------------------------------------------------------------


def host_name() -> str:
    """The host's name as the journal shows it."""
    try:
        name = host_path("/etc/hostname").read_text().strip()
    except OSError:
        name = ""
    return name or socket.gethostname()


def journal(unit: str, identifier: str, message: str) -> None:
    """Append one line to a unit's journal, in journalctl's short format."""
    path = journal_path(unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
    with path.open("a") as out:
        out.write(f"{stamp} {host_name()} {identifier}: {message}\n")


def systemd_log(unit: str, message: str) -> None:
    """A message of systemd itself about a unit."""
    journal(unit, "systemd[1]", message)


# -- running a unit ---------------------------------------------------------------------------


def unit_environment(service: ServiceUnit, runtime_directory: str | None) -> dict[str, str]:
    """The clean environment systemd gives the unit's processes."""
    env: dict[str, str] = {}
    # The lab's own plumbing (where the host root and control plane are) is not systemd's.
    for key, value in os.environ.items():
        if key.startswith("TAILNIX_LAB_") or key == "PYTHONPATH":
            env[key] = value
    for key, value in (service.definition.get("environment") or {}).items():
        if value is not None:
            env[key] = _environment_value(value)
    for assignment in _list_setting(service.service_config.get("Environment")):
        for word in shlex.split(assignment):
            key, sep, value = word.partition("=")
            if sep:
                env[key] = value
    env["PATH"] = ":".join(_host_dir(entry) for entry in env.get("PATH", "").split(":") if entry)
    env["INVOCATION_ID"] = os.urandom(16).hex()
    env["LANG"] = env.get("LANG", "C.UTF-8")
    if runtime_directory is not None:
        env["RUNTIME_DIRECTORY"] = runtime_directory
    return env


def _environment_value(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("outPath", ""))
    return str(value)


def _list_setting(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _host_dir(path: str) -> str:
    return str(host_path(path)) if path.startswith("/") else path


# The job scripts NixOS makes of a unit's shell options (systemd-unit-options.nix), by file suffix.
JOB_SCRIPTS = {
    "pre-start": "preStart",
    "start": "script",
    "post-start": "postStart",
    "reload": "reload",
    "pre-stop": "preStop",
    "post-stop": "postStop",
}


def job_script(text: str, strict: bool = False) -> str:
    """A unit script as NixOS's makeJobScript writes it (systemd-lib.nix).

    `writeShellScriptBin` with `set -e`, or with `enableStrictShellChecks` a `writeShellApplication`,
    whose scripts start with errexit, nounset and pipefail (trivial-builders).
    """
    if strict:
        return f"#!{SYSTEM_SW}/bin/bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\n{text}\n"
    return f"#!{SYSTEM_SW}/bin/bash\nset -e\n\n{text}\n"


def job_script_name(service_name: str, suffix: str) -> str:
    """The script's file name: makeJobScript's `scriptName` of `NAME-SUFFIX`."""
    return f"{service_name}-{suffix}".replace("\\", "-").replace("@", "_")


def _script_file(service: ServiceUnit, suffix: str, text: str) -> Path:
    directory = units_dir() / "scripts"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / job_script_name(service.name, suffix)
    path.write_text(job_script(text, bool(service.definition.get("enableStrictShellChecks"))))
    path.chmod(0o755)
    return path


def _bash() -> str:
    shell = host_path(f"{SYSTEM_SW}/bin/bash")
    return str(shell) if shell.exists() else "/bin/bash"


def exec_commands(service: ServiceUnit, setting: str, script_key: str, suffix: str) -> list[list[str]]:
    """The command lines of ExecStartPre/ExecStart/ExecStartPost, NixOS's scripts included."""
    commands: list[list[str]] = []
    script = str(service.definition.get(script_key) or "")
    if script.strip():
        path = _script_file(service, suffix, script)
        args = shlex.split(str(service.definition.get("scriptArgs") or "")) if suffix == "start" else []
        commands.append([_bash(), str(path), *args])
    for line in _list_setting(service.service_config.get(setting)):
        words = shlex.split(line)
        if words:
            words[0] = _host_dir(words[0].lstrip("-@+!"))
            commands.append(words)
    return commands


class _Supervisor:
    """Runs one start of a unit, keeps its state and journal, and restarts it per `Restart=`."""

    def __init__(self, service: ServiceUnit) -> None:
        self.service = service
        self.unit = service.unit
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def identifier(self, suffix: str, pid: int) -> str:
        return f"{self.service.name}-{suffix}[{pid}]"

    def run_logged(
        self, command: list[str], suffix: str, env: dict[str, str], umask: int
    ) -> subprocess.Popen[bytes]:
        def prepare() -> None:
            os.umask(umask)

        child = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
            preexec_fn=prepare,
        )
        self.child = child
        return child

    def pump(self, child: subprocess.Popen[bytes], suffix: str) -> None:
        """Copy the child's output into the journal, line by line."""
        assert child.stdout is not None
        ident = self.identifier(suffix, child.pid)
        for raw in child.stdout:
            journal(self.unit, ident, raw.decode(errors="replace").rstrip("\n"))

    def terminate(self, *_: Any) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGTERM)

    def main(self) -> int:
        signal.signal(signal.SIGTERM, self.terminate)
        try:
            return self.run_with_restarts()
        finally:
            # systemd removes RuntimeDirectory= once the unit is no longer active.
            if read_state(self.unit).get("ActiveState") != ACTIVE:
                remove_runtime_directories(self.service)

    def run_with_restarts(self) -> int:
        starts: list[float] = []
        burst = int(self.service.definition.get("startLimitBurst") or DEFAULT_START_LIMIT_BURST)
        interval = float(
            self.service.definition.get("startLimitIntervalSec") or DEFAULT_START_LIMIT_INTERVAL_SEC
        )
        while True:
            now = time.time()
            starts = [t for t in starts if now - t < interval] + [now]
            if len(starts) > burst:
                systemd_log(self.unit, f"{self.unit}: Start request repeated too quickly.")
                systemd_log(self.unit, f"{self.unit}: Failed with result 'start-limit-hit'.")
                systemd_log(self.unit, f"Failed to start {self.service.description}.")
                write_state(
                    self.unit, ActiveState=FAILED, SubState="failed", Result="start-limit-hit", MainPID=0
                )
                return 1
            result = self.start_once()
            if self.stopping:
                return 0
            restart = self.service.setting("Restart", "no")
            if result == "success" or restart not in ("on-failure", "always", "on-abnormal"):
                return 0 if result == "success" else 1
            delay = parse_timespan(self.service.setting("RestartSec", str(DEFAULT_RESTART_SEC))) or 0.0
            time.sleep(delay)
            systemd_log(self.unit, f"{self.unit}: Scheduled restart job.")

    def start_once(self) -> str:
        service = self.service
        kind = service.service_type
        timeout = parse_timespan(service.setting("TimeoutStartSec", str(DEFAULT_TIMEOUT_START_SEC)))
        deadline = None if timeout is None or timeout == 0 else time.monotonic() + timeout
        umask = int(service.setting("UMask", "0022"), 8)
        runtime_dir = self.make_directories()
        env = unit_environment(service, runtime_dir)
        notify_path = units_dir() / f"{self.unit}.notify"
        notify_path.unlink(missing_ok=True)
        if kind == "notify":
            env["NOTIFY_SOCKET"] = str(notify_path)
        write_state(
            self.unit,
            ActiveState=ACTIVATING,
            SubState="start-pre",
            Result="success",
            SupervisorPID=os.getpid(),
            Hash=service.definition_hash,
        )
        systemd_log(self.unit, f"Starting {service.description}...")

        for command in exec_commands(service, "ExecStartPre", "preStart", "pre-start"):
            result = self.run_to_end(command, "pre-start", env, umask, deadline)
            if result != "success":
                return self.fail(result)

        mains = exec_commands(service, "ExecStart", "script", "start")
        if not mains:
            systemd_log(
                self.unit, f"{self.unit}: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing."
            )
            return self.fail("resources")
        if kind == "oneshot":
            for command in mains:
                result = self.run_to_end(command, "start", env, umask, deadline)
                if result != "success":
                    return self.fail(result)
            result = self.post_start(env, umask, deadline)
            if result != "success":
                return self.fail(result)
            if service.remain_after_exit:
                write_state(
                    self.unit,
                    ActiveState=ACTIVE,
                    SubState="exited",
                    MainPID=0,
                    ActiveEnterTimestamp=time.time(),
                )
                systemd_log(self.unit, f"Finished {service.description}.")
            else:
                write_state(self.unit, ActiveState=INACTIVE, SubState="dead", MainPID=0)
                systemd_log(self.unit, f"{self.unit}: Deactivated successfully.")
                systemd_log(self.unit, f"Finished {service.description}.")
            return "success"

        child = self.run_logged(mains[0], "start", env, umask)
        pump = threading.Thread(target=self.pump, args=(child, "start"), daemon=True)
        pump.start()
        write_state(self.unit, SubState="start", MainPID=child.pid)
        if kind == "notify":
            while not _ready(notify_path):
                if child.poll() is not None:
                    pump.join()
                    if self.stopping:
                        return self.stopped()
                    code = child.returncode
                    if code == 0:
                        systemd_log(
                            self.unit, f"{self.unit}: Main process exited, code=exited, status=0/SUCCESS"
                        )
                        return self.fail("protocol")
                    self.log_exit(code)
                    return self.fail("exit-code" if code > 0 else "signal")
                if deadline is not None and time.monotonic() > deadline:
                    self.stop_timed_out_start(child, pump)
                    return self.fail("timeout")
                time.sleep(POLL_SECONDS)
        result = self.post_start(env, umask, deadline)
        if result != "success":
            self.terminate()
            return self.fail(result)
        write_state(self.unit, ActiveState=ACTIVE, SubState="running", ActiveEnterTimestamp=time.time())
        systemd_log(self.unit, f"Started {service.description}.")
        child.wait()
        pump.join()
        if self.stopping:
            return self.stopped()
        code = child.returncode
        if code == 0:
            if service.remain_after_exit:
                write_state(self.unit, ActiveState=ACTIVE, SubState="exited", MainPID=0)
            else:
                write_state(self.unit, ActiveState=INACTIVE, SubState="dead", MainPID=0)
                systemd_log(self.unit, f"{self.unit}: Deactivated successfully.")
            return "success"
        self.log_exit(code)
        return self.fail("exit-code" if code > 0 else "signal")

    def post_start(self, env: dict[str, str], umask: int, deadline: float | None) -> str:
        for command in exec_commands(self.service, "ExecStartPost", "postStart", "post-start"):
            result = self.run_to_end(command, "post-start", env, umask, deadline)
            if result != "success":
                return result
        return "success"

    def run_to_end(
        self, command: list[str], suffix: str, env: dict[str, str], umask: int, deadline: float | None
    ) -> str:
        try:
            child = self.run_logged(command, suffix, env, umask)
        except OSError as err:
            systemd_log(self.unit, f"{self.unit}: Failed to execute {command[0]}: {err.strerror}")
            return "exit-code"
        pump = threading.Thread(target=self.pump, args=(child, suffix), daemon=True)
        pump.start()
        write_state(self.unit, MainPID=child.pid)
        while child.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                self.stop_timed_out_start(child, pump)
                return "timeout"
            time.sleep(POLL_SECONDS)
        pump.join()
        if child.returncode != 0:
            self.log_exit(child.returncode)
            return "exit-code" if child.returncode > 0 else "signal"
        return "success"

    def stop_timed_out_start(self, child: subprocess.Popen[bytes], pump: threading.Thread) -> None:
        """What systemd does when a start runs past TimeoutStartSec: say so, and terminate the unit."""
        systemd_log(self.unit, f"{self.unit}: start operation timed out. Terminating.")
        self.terminate()
        self.stopping = False
        child.wait()
        pump.join()

    def log_exit(self, code: int) -> None:
        # systemd's ExecMainCode (1 CLD_EXITED, 2 CLD_KILLED) and ExecMainStatus.
        write_state(self.unit, ExecMainCode=1 if code > 0 else 2, ExecMainStatus=abs(code))
        if code > 0:
            systemd_log(self.unit, f"{self.unit}: Main process exited, code=exited, status={code}/FAILURE")
        else:
            name = signal.Signals(-code).name
            systemd_log(
                self.unit, f"{self.unit}: Main process exited, code=killed, status={-code}/{name[3:]}"
            )

    def fail(self, result: str) -> str:
        if self.stopping:
            return self.stopped()
        systemd_log(self.unit, f"{self.unit}: Failed with result '{result}'.")
        systemd_log(self.unit, f"Failed to start {self.service.description}.")
        write_state(self.unit, ActiveState=FAILED, SubState="failed", Result=result, MainPID=0)
        return result

    def stopped(self) -> str:
        write_state(self.unit, ActiveState=INACTIVE, SubState="dead", MainPID=0)
        systemd_log(self.unit, f"Stopped {self.service.description}.")
        return "success"

    def make_directories(self) -> str | None:
        runtime: str | None = None
        for setting, base, mode_setting in (
            ("RuntimeDirectory", "/run", "RuntimeDirectoryMode"),
            ("StateDirectory", "/var/lib", "StateDirectoryMode"),
        ):
            names = " ".join(_list_setting(self.service.service_config.get(setting))).split()
            mode = int(self.service.setting(mode_setting, "0755"), 8)
            paths = []
            for name in names:
                path = host_path(f"{base}/{name}")
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(mode)
                paths.append(str(path))
            if setting == "RuntimeDirectory" and paths:
                runtime = ":".join(paths)
        return runtime


def _ready(notify_path: Path) -> bool:
    try:
        return "READY=1" in notify_path.read_text().split()
    except OSError:
        return False


def supervise(unit: str) -> int:
    """Entry point of a unit's supervisor process."""
    service = load_definition(unit)
    if service is None:
        return 1
    return _Supervisor(service).main()


# -- what systemctl and the activation call -----------------------------------------------------


def start(unit: str, wait: bool = True) -> str:
    """Start a unit (no-op when active) and wait until it is up, failed or done; return ActiveState."""
    state = read_state(unit)
    if state.get("ActiveState") in (ACTIVE, ACTIVATING):
        return str(state["ActiveState"])
    service = load_definition(unit)
    if service is None:
        raise UnitNotFound(unit)
    if unit in DAEMON_UNITS:
        systemd_log(unit, f"Starting {service.description}...")
        tailscaled.start()
        write_state(
            unit,
            ActiveState=ACTIVE,
            SubState="running",
            Result="success",
            Hash=service.definition_hash,
            ActiveEnterTimestamp=time.time(),
            MainPID=os.getpid(),
        )
        systemd_log(unit, f"Started {service.description}.")
        return ACTIVE
    write_state(
        unit, ActiveState=ACTIVATING, SubState="start-pre", Result="success", Hash=service.definition_hash
    )
    subprocess.Popen(
        [sys.executable, "-m", "tailnix_lab.emulator.units", "supervise", unit],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ),
    )
    if not wait:
        return ACTIVATING
    while True:
        current = read_state(unit).get("ActiveState")
        if current != ACTIVATING:
            return str(current)
        time.sleep(POLL_SECONDS)


def stop(unit: str) -> None:
    """Stop a unit and wait until its processes are gone."""
    state = read_state(unit)
    service = load_definition(unit)
    description = service.description if service else unit
    if unit in DAEMON_UNITS:
        if state.get("ActiveState") == ACTIVE:
            systemd_log(unit, f"Stopping {description}...")
        tailscaled.stop()
        write_state(unit, ActiveState=INACTIVE, SubState="dead", MainPID=0)
        return
    pid = int(state.get("SupervisorPID") or 0)
    if state.get("ActiveState") in (ACTIVE, ACTIVATING) and pid:
        systemd_log(unit, f"Stopping {description}...")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    if read_state(unit).get("ActiveState") != INACTIVE:
        write_state(unit, ActiveState=INACTIVE, SubState="dead", MainPID=0)
        if state.get("ActiveState") in (ACTIVE, ACTIVATING):
            systemd_log(unit, f"Stopped {description}.")
    if service is not None:
        remove_runtime_directories(service)


def remove_runtime_directories(service: ServiceUnit) -> None:
    """Remove a unit's `RuntimeDirectory=` directories."""
    for name in " ".join(_list_setting(service.service_config.get("RuntimeDirectory"))).split():
        _remove_tree(host_path(f"/run/{name}"))


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished supervisor is a zombie until its parent reaps it; it no longer counts.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except OSError:
        return False
    return status != "Z"


def restart(unit: str) -> str:
    """Stop then start a unit."""
    stop(unit)
    return start(unit)


class UnitNotFound(Exception):
    """No unit of that name is loaded."""

    def __init__(self, unit: str) -> None:
        super().__init__(f"Unit {unit} not found.")
        self.unit = unit


def main(argv: list[str]) -> int:
    """`python3 -m tailnix_lab.emulator.units supervise UNIT` or `notify --ready`."""
    if len(argv) == 2 and argv[0] == "supervise":
        return supervise(argv[1])
    if argv and argv[0] == "notify":
        return notify(argv[1:])
    print("usage: units supervise UNIT | units notify --ready", file=sys.stderr)
    return 2


def notify(argv: list[str]) -> int:
    """`systemd-notify`: tell the service manager about the calling service."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        print("No socket", file=sys.stderr)
        return 1
    words = []
    for arg in argv:
        if arg == "--ready":
            words.append("READY=1")
        elif arg.startswith("--status="):
            words.append("STATUS=" + arg.split("=", 1)[1])
        elif "=" in arg and not arg.startswith("-"):
            words.append(arg)
    with open(target, "a") as out:
        out.write("\n".join(words) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
