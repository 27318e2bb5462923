"""Running pyinfra for the fleet commands, and reading back what it did.

Everything that touches hosts goes through the pyinfra CLI (`pyinfra -y --json INVENTORY ...`) as a
subprocess, with the inventory's own SSH settings. What a deploy did comes from its events (tailnix.events,
a file the playbook writes while the run goes on) and from pyinfra's `--json` results, never from the
log lines it prints for people.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tailnix import events, steps
from tailnix.fleet import FleetError, FleetHost, inventory_directory
from tailnix.interrupt import INTERRUPTED_EXIT
from tailnix.sudo import login_user, password_refusal, sudo_refusal

SUDO_FACT = "tailnix.sudo.SudoAccess"
FOLLOW_SECONDS = 0.1
"""How often the events file is read while a run goes on."""


def pyinfra_command() -> str:
    """The pyinfra CLI beside the running Python (the virtualenv's), or the one on PATH."""
    beside = Path(sys.executable).parent / "pyinfra"
    return str(beside) if beside.exists() else "pyinfra"


INSTALLED = Path(__file__).resolve().parent / "deploys"
"""The package's own deploy file and pyinfra config, for a fleet directory without its own."""


def default_deploy_file(directory: Path) -> Path:
    """The fleet's `deploys/tailscale.py` (in `directory`), or the installed package's."""
    own = directory / "deploys" / "tailscale.py"
    return own if own.is_file() else INSTALLED / "tailscale.py"


def pyinfra_argv(inventory_file: Path, *options: str) -> list[str]:
    """`pyinfra OPTIONS INVENTORY`, to run in the inventory's directory (`inventory_directory`).

    pyinfra reads `config.py` from where it runs: the fleet's own, or the installed one when it has none.
    """
    command = [pyinfra_command(), *options]
    if not (inventory_directory(inventory_file) / "config.py").is_file():
        command += ["--config", str(INSTALLED / "config.py")]
    return [*command, str(inventory_file.absolute())]


def _limits(hosts: Iterable[str]) -> list[str]:
    return [argument for name in hosts for argument in ("--limit", name)]


_HOST_LINE = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+(?P<text>.*?)\s*$")


def _connect_failures(stderr: str) -> dict[str, str]:
    failures = {}
    for line in stderr.splitlines():
        match = _HOST_LINE.match(line)
        if match and match["text"].startswith("Could not connect"):
            failures[match["host"]] = match["text"]
    return failures


def _json_payload(stdout: str) -> dict[str, Any] | None:
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        payload = json.loads(stdout[start:])
    except json.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


@dataclass(frozen=True)
class FactReading:
    """A fact of every host asked: its value, or why it could not be read."""

    values: dict[str, Any]
    errors: dict[str, str]
    """Hosts that could not be reached, and pyinfra's reason."""
    refused: dict[str, str] = field(default_factory=dict)
    """Hosts reached whose sudo cannot run the fact without a password, and what to do about it."""


def _run_fact(inventory_file: Path, fact: str, hosts: list[str], *options: str) -> tuple[dict[str, Any], str]:
    """`pyinfra -y --json INVENTORY fact FACT` on `hosts`: the values it printed, and its stderr."""
    result = subprocess.run(
        [*pyinfra_argv(inventory_file, "-y", "--json", *options), "fact", fact, *_limits(hosts)],
        cwd=inventory_directory(inventory_file),
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    payload = _json_payload(result.stdout) or {}
    return payload.get(fact) or {}, result.stderr


def _sudo_refusals(inventory_file: Path, hosts: list[FleetHost]) -> dict[str, str]:
    """Hosts reached with `_sudo` whose sudo cannot run a command without a password, and why.

    Asked before any fact runs through sudo: pyinfra would otherwise prompt for the password.
    """
    refused = {
        host.name: password_refusal(host.name, login_user(host.data.get("ssh_user")))
        for host in hosts
        if host.data.get("_sudo") and host.data.get("_sudo_password")
    }
    asked = [host for host in hosts if host.data.get("_sudo") and host.name not in refused]
    if not asked:
        return refused
    answers, _ = _run_fact(inventory_file, SUDO_FACT, [host.name for host in asked], "--data", "_sudo=False")
    for host in asked:
        answer = answers.get(host.name)
        problem = (
            sudo_refusal(host.name, login_user(host.data.get("ssh_user")), answer)
            if isinstance(answer, str)
            else None
        )
        if problem is not None:
            refused[host.name] = problem
    return refused


def read_fact(inventory_file: Path, fact: str, hosts: list[FleetHost]) -> FactReading:
    """Run `pyinfra INVENTORY fact FACT --json` on `hosts`; unreachable hosts come back in `errors`.

    A host whose sudo asks for a password is not asked for the fact: it comes back in `refused`.
    """
    refused = _sudo_refusals(inventory_file, hosts)
    asked = [host.name for host in hosts if host.name not in refused]
    values, stderr = _run_fact(inventory_file, fact, asked) if asked else ({}, "")
    failures = _connect_failures(stderr)
    errors = {}
    for name in asked:
        if values.get(name) is None:
            errors[name] = failures.get(name) or _last_words(stderr, name) or "no answer"
    found = {k: v for k, v in values.items() if v is not None and k in asked}
    return FactReading(found, errors, refused)


def _last_words(stderr: str, host: str) -> str:
    """pyinfra's last line that is about `host` or about no host in particular (never another host's)."""
    lines = []
    for line in stderr.splitlines():
        about = _HOST_LINE.match(line)
        if line.strip() and not line.startswith("-->") and (about is None or about["host"] == host):
            lines.append(line.strip())
    return lines[-1] if lines else ""


@dataclass
class HostDeployResult:
    """How the deploy went on one host."""

    host: str
    ok: bool
    switched: bool = False
    detail: str = ""
    """The one sentence tailnix said about the host: why it failed, or how it ended."""
    evidence: tuple[str, ...] = ()
    """The lines under that sentence: nixos-rebuild's error, the join unit's journal."""


@dataclass
class DeployOutcome:
    """The result of a (possibly batched) deploy."""

    hosts: list[HostDeployResult] = field(default_factory=list)
    not_attempted: list[str] = field(default_factory=list)
    stopped_reason: str = ""
    interrupted: bool = False
    """pyinfra was interrupted (Ctrl-C): the run ended early, and no later batch was started."""

    @property
    def ok(self) -> bool:
        """Whether every host was deployed successfully."""
        return all(h.ok for h in self.hosts) and not self.not_attempted and not self.interrupted


class DeployProgress:
    """What the events of one run (tailnix.events) tell, host by host, as they arrive.

    + on_step: hears of a host starting a step that takes time (steps.SLOW)
    + on_host: hears of each host once, when it has ended well or failed
    """

    def __init__(
        self,
        on_step: Callable[[str, str], None] = lambda _host, _step: None,
        on_host: Callable[[HostDeployResult], None] = lambda _result: None,
    ) -> None:
        self._on_step = on_step
        self._on_host = on_host
        self.done: dict[str, HostDeployResult] = {}
        self._switched: set[str] = set()
        self.stopped: events.Event | None = None
        """The settings error that stopped the whole run, if one did."""
        self.refusals: dict[str, events.Event] = {}
        """Hosts refused or unreachable before any step."""
        self.planned: dict[str, dict[str, str]] = {}
        """Per host and step, what the step will change (events.PLANNED), when its name does not say it."""

    def take(self, event: events.Event) -> None:
        """Follow one event."""
        host = event.host
        if host in self.done:
            return
        if event.outcome == events.START:
            if event.step in steps.SLOW:
                self._on_step(host, event.step)
            return
        if event.outcome == events.SUCCESS:
            if event.switched:
                self._switched.add(host)
            if event.step not in steps.FINAL:
                return
        elif event.outcome == events.PLANNED:
            self.planned.setdefault(host, {})[event.step] = event.sentence
            return
        elif event.outcome == events.INVALID:
            self.stopped = event
        elif event.outcome in (events.REFUSED, events.UNREACHABLE):
            self.refusals[host] = event
        ok = event.outcome == events.SUCCESS
        self._end(HostDeployResult(host, ok, host in self._switched, event.sentence, event.lines))

    def _end(self, result: HostDeployResult) -> None:
        self.done[result.host] = result
        self._on_host(result)

    def finish(self, hosts: list[str], returncode: int, pyinfra_said: str) -> list[HostDeployResult]:
        """Every host's result once the run has ended; hosts the events never ended are failed, with why."""
        for host in hosts:
            if host in self.done:
                continue
            if self.stopped is not None:
                self._end(
                    HostDeployResult(
                        host,
                        False,
                        detail=f"not deployed: the run stopped at the settings of {self.stopped.host}, "
                        "before any host was changed",
                    )
                )
            elif returncode == 0:
                self._end(HostDeployResult(host, True, host in self._switched))
            elif returncode == INTERRUPTED_EXIT:
                self._end(HostDeployResult(host, False, False, "interrupted before this host's deploy ended"))
            else:
                # pyinfra stopped before this host's last step without a word tailnix could record: what it
                # printed is passed on as it is.
                tail = tuple(line for line in pyinfra_said.splitlines() if line.strip())[-events.MAX_LINES :]
                self._end(HostDeployResult(host, False, False, f"pyinfra exited {returncode}", tail))
        return [self.done[host] for host in hosts]


def _follow(feed: IO[str], process: subprocess.Popen[str], progress: DeployProgress) -> None:
    """Hand each event of the file to `progress` as the run writes it, until the run has ended."""
    pending = ""
    while True:
        ended = process.poll() is not None
        pending += feed.read()
        *complete, pending = pending.split("\n")
        for line in complete:
            event = events.Event.from_line(line)
            if event is not None:
                progress.take(event)
        if ended:
            return
        time.sleep(FOLLOW_SECONDS)


@contextmanager
def _events_file() -> Iterator[Path]:
    """A new, private file for one run's events (mode 0600, in a 0700 directory), removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="tailnix-events-"))
    try:
        path = directory / "events.jsonl"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_with_events(command: list[str], directory: Path, progress: DeployProgress) -> tuple[int, str, str]:
    """Run pyinfra in `directory` with $TAILNIX_EVENTS set, following its events; its exit code, stdout and
    stderr."""
    # Output goes to files: a pipe nobody reads while the run is going could fill up and stall it.
    with (
        _events_file() as path,
        tempfile.TemporaryFile("w+") as stdout,
        tempfile.TemporaryFile("w+") as stderr,
    ):
        environment = {**os.environ, events.EVENTS_ENV: str(path)}
        process = subprocess.Popen(
            command,
            cwd=directory,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=environment,
        )
        with path.open(encoding="utf-8") as feed:
            try:
                _follow(feed, process, progress)
            except KeyboardInterrupt:
                # Ctrl-C in a terminal reaches pyinfra too; a SIGINT sent to this process alone is passed on.
                # Either way pyinfra ends the run its own way (a switch under way is still confirmed or rolls
                # back on the host), and its events are followed to the end.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)
                _follow(feed, process, progress)
        stdout.seek(0)
        stderr.seek(0)
        return process.returncode, stdout.read(), stderr.read()


def run_deploy(
    inventory_file: Path,
    hosts: list[str],
    *,
    deploy_file: Path | None = None,
    fail_percent: int | None = None,
    on_host: Callable[[HostDeployResult], None] = lambda _result: None,
    on_step: Callable[[str, str], None] = lambda _host, _step: None,
) -> DeployOutcome:
    """Deploy to `hosts` with one `pyinfra -y --json` run.

    `on_step` hears of each host starting a step that takes time, `on_host` of each host as it finishes.
    """
    directory = inventory_directory(inventory_file)
    command = [
        *pyinfra_argv(inventory_file, "-y", "--json"),
        str((deploy_file or default_deploy_file(directory)).absolute()),
    ]
    command += _limits(hosts)
    if fail_percent is not None:
        command += ["--fail-percent", str(fail_percent)]
    progress = DeployProgress(on_step, on_host)
    returncode, stdout, stderr = _run_with_events(command, directory, progress)
    results = progress.finish(hosts, returncode, stderr)
    # pyinfra's own results have the last word on which hosts failed and switched.
    payload = (_json_payload(stdout) or {}).get("results") or {}
    failed = set(payload.get("failed_hosts") or [])
    switch = [op for op in payload.get("operations", []) if op.get("name") == steps.SWITCH]
    switched = set(switch[0].get("success", [])) if switch else set()
    for result in results:
        result.ok = result.ok and result.host not in failed
        result.switched = result.switched or result.host in switched
    return DeployOutcome(results, interrupted=returncode == INTERRUPTED_EXIT)


def run_batched_deploy(
    inventory_file: Path,
    hosts: list[str],
    *,
    batch: int | None,
    fail_percent: int | None,
    deploy_file: Path | None = None,
    on_host: Callable[[HostDeployResult], None] = lambda _result: None,
    on_step: Callable[[str, str], None] = lambda _host, _step: None,
) -> DeployOutcome:
    """Deploy in batches of `batch` hosts; stop before the next batch when more than `fail_percent`% failed."""
    size = batch or len(hosts) or 1
    outcome = DeployOutcome()
    for start in range(0, len(hosts), size):
        chunk = hosts[start : start + size]
        run = run_deploy(
            inventory_file,
            chunk,
            deploy_file=deploy_file,
            fail_percent=fail_percent,
            on_host=on_host,
            on_step=on_step,
        )
        outcome.hosts += run.hosts
        failed = sum(not h.ok for h in outcome.hosts)
        limit = 0 if fail_percent is None else fail_percent
        rest = hosts[start + size :]
        if run.interrupted:
            outcome.interrupted = True
            outcome.not_attempted = rest
            outcome.stopped_reason = (
                f"interrupted; not deployed: {', '.join(rest)}" if rest else "interrupted"
            )
            break
        if rest and failed * 100 > limit * len(outcome.hosts):
            outcome.not_attempted = rest
            outcome.stopped_reason = (
                f"stopped: {failed} of {len(outcome.hosts)} hosts failed "
                f"(more than {limit}%); not deployed: {', '.join(rest)}"
            )
            break
    return outcome


def dry_run(
    inventory_file: Path, hosts: list[str], *, deploy_file: Path | None = None
) -> dict[str, list[str]]:
    """What a deploy would change, per host: the names of the operations that would run commands.

    A host that would be refused or cannot be reached gets one entry, `refused: WHY` or `unreachable: WHY`.
    """
    directory = inventory_directory(inventory_file)
    command = [
        *pyinfra_argv(inventory_file, "--dry", "--json"),
        str((deploy_file or default_deploy_file(directory)).absolute()),
        *_limits(hosts),
    ]
    progress = DeployProgress()
    returncode, stdout, stderr = _run_with_events(command, directory, progress)
    if progress.stopped is not None:
        raise FleetError(f"the dry run failed: {progress.stopped.sentence}")
    payload = _json_payload(stdout)
    if payload is None:
        tail = "\n".join([line for line in stderr.splitlines() if line.strip()][-events.MAX_LINES :])
        raise FleetError(f"the dry run failed: pyinfra exited {returncode}:\n{tail}")
    changes: dict[str, list[str]] = {host: [] for host in hosts}
    for operation in payload.get("plan", []):
        for host in operation.get("hosts_with_change", []) + operation.get(
            "hosts_with_conditional_change", []
        ):
            name = progress.planned.get(host, {}).get(operation["name"], operation["name"])
            if host in changes and name not in changes[host]:
                changes[host].append(name)
    for host, planned in progress.planned.items():
        # The drift of a node's prefs is no operation: a host that changes nothing has it too.
        if host in changes and steps.DRIFT in planned:
            changes[host] = [*(changes[host] or ["nothing to do"]), planned[steps.DRIFT]]
    for host, outcome in progress.refusals.items():
        if host in changes:
            changes[host] = [f"{outcome.outcome}: {outcome.sentence}"]
    return changes
