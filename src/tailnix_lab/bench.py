"""The fleet benchmark: a no-op redeploy measured side by side with a bare SSH round trip.

`tailnix bench --hosts N --rounds R` starts an N-host lab and, in one run:

- (c) deploys once to the fresh hosts;
- then, R times, alternating so that both see the same machine load: (a) the floor, a bare pyinfra run
  of `true` on every host (one connection and one command per host); (b) the deploy again on the
  converged fleet; (b') the same deploy with pyinfra's `--no-wait`, which drops the barrier between
  operations, to show what the barriers cost;
- with `--ansible`, in each round, (d) the same steps as an Ansible playbook (`ansible_peer`);
- with `--boot`, at the end, boot to Running of three more hosts, one per way of joining (`boot_bench`).

Everything runs through the real pyinfra CLI, as a user runs it. The phases of each run are timed from
pyinfra's own `-->` lines as they arrive; the SSH commands of (b) are counted from one extra,
untimed run with `--debug`; the deployer's peak memory comes from the kernel (`wait4`).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import click

from tailnix_lab import ansible_peer, boot_bench
from tailnix_lab.hosts import Lab
from tailnix_lab.layout import LabError

PYINFRA = Path(sys.executable).parent / "pyinfra"
DEPLOY = Path("deploys") / "tailscale.py"
FLOOR = "floor"
NOOP = "noop"
NOOP_NO_WAIT = "noop_no_wait"
FIRST = "first"
ANSIBLE = "ansible"
KIND_LABELS = {
    FLOOR: "(a) floor: pyinfra exec -- true",
    NOOP: "(b) no-op redeploy",
    NOOP_NO_WAIT: "(b') no-op redeploy, --no-wait",
    FIRST: "(c) first deploy, fresh hosts",
    ANSIBLE: "(d) Ansible, the same steps, no-op",
}
_MARKER = "--> "
_COMMAND_LINE = re.compile(r"Running command on (?P<host>\S+): \(pty=\w+\) (?P<command>.*)$")
_UPLOAD_LINE = re.compile(r"Attempting upload of .* to (?P<target>\S+)")
_VERIFY_CALLS = (
    "tailscale status --json --peers=false",
    "tailscale debug prefs",
    "journalctl -u tailscale-autoconnect.service -n 8 --no-pager",
)
"""The emulated commands the deploy's verify step runs on every host, timed one by one."""


class BenchError(RuntimeError):
    """A benchmark run failed; a benchmark of a failing deploy means nothing."""


@dataclass(frozen=True)
class Run:
    """One pyinfra process: wall time, CPU time and peak memory, and its phases."""

    kind: str
    seconds: float
    cpu_seconds: float
    max_rss_kib: int
    phases: tuple[tuple[str, float], ...]
    """(phase, seconds), in order; a phase runs from one `-->` line of pyinfra to the next."""


@dataclass(frozen=True)
class CommandCount:
    """The SSH traffic of one no-op redeploy, from pyinfra's debug log and the hosts' sshd logs."""

    commands_per_host: dict[str, int]
    uploads_per_host: dict[str, int]
    connections_per_host: dict[str, int]
    commands_of_one_host: list[tuple[int, str]]
    """(times run, command shortened) for the first host, most frequent first."""
    scripts_of_one_host: list[str]
    """The distinct commands of the first host in full, as pyinfra sent them, to replay them."""


@dataclass(frozen=True)
class EmulatorCost:
    """Milliseconds per call, inside one host, of the commands the verify step runs."""

    milliseconds: dict[str, float]
    baseline_milliseconds: float
    """The same loop around `true`, to subtract the loop's own cost."""


@dataclass
class Results:
    """Every run of a benchmark, with what was counted beside the timings."""

    hosts: int
    rounds: int
    runs: list[Run] = field(default_factory=list)
    commands: CommandCount | None = None
    emulator: EmulatorCost | None = None
    replayed: list[tuple[str, float | None]] = field(default_factory=list)
    ansible_changed: list[int] = field(default_factory=list)
    """Tasks the Ansible peer changed in each of its runs, the untimed first one included."""
    load: list[tuple[float, float, float]] = field(default_factory=list)
    """The machine's load averages as the runs began and ended: other work on its cores shows here."""

    def of(self, kind: str) -> list[Run]:
        """The runs of one kind, in the order they ran."""
        return [run for run in self.runs if run.kind == kind]

    def median_seconds(self, kind: str) -> float:
        """Median wall time of one kind of run."""
        return statistics.median(run.seconds for run in self.of(kind))

    def peak_rss_mib(self, kind: str) -> float:
        """The deployer's largest resident set over the runs of one kind, in MiB."""
        return max(run.max_rss_kib for run in self.of(kind)) / 1024

    @property
    def ratio_noop_vs_floor(self) -> float:
        """Median no-op redeploy over median floor: the figure the fleet's users feel."""
        return self.median_seconds(NOOP) / self.median_seconds(FLOOR)

    @property
    def ratio_ansible_vs_noop(self) -> float:
        """Median no-op run of the Ansible peer over median no-op redeploy of tailnix."""
        return self.median_seconds(ANSIBLE) / self.median_seconds(NOOP)

    @property
    def cpu_ratio_ansible_vs_noop(self) -> float:
        """The same for the deployer's CPU, which other work on the machine moves less than the wall."""
        ansible = statistics.median(run.cpu_seconds for run in self.of(ANSIBLE))
        return ansible / statistics.median(run.cpu_seconds for run in self.of(NOOP))


def _phase_name(marker: str) -> str:
    text = marker[len(_MARKER) :].strip().rstrip(".")
    if text.startswith("Starting operation:"):
        return "op: " + text.split(":", 1)[1].strip()
    if text.startswith("Preparing"):
        return "prepare operations"
    return text.lower()


def run_pyinfra(kind: str, arguments: Sequence[str], cwd: Path) -> tuple[Run, list[str]]:
    """Run the pyinfra CLI once from the repository `cwd`; time it, its phases and its peak memory.

    The deploy imports `tailnix` from `cwd`/src, so that another checkout can be measured with the same
    lab. Returns the run and pyinfra's output lines; raises BenchError if pyinfra exits non-zero.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "PYINFRA_YES": "1"}
    source = cwd / "src"
    if source.is_dir():
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(source), os.environ.get("PYTHONPATH", "")])
        )
    started = time.monotonic()
    process = subprocess.Popen(
        [str(PYINFRA), "-y", *arguments],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    lines: list[str] = []
    marks: list[tuple[str, float]] = [("start python, import pyinfra", started)]
    try:
        for line in process.stdout:
            now = time.monotonic()
            lines.append(line.rstrip("\n"))
            stripped = line.strip()
            if stripped.startswith(_MARKER):
                marks.append((_phase_name(stripped), now))
        # wait4 rather than Popen.wait: it also hands back the child's own resource usage.
        _pid, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    ended = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise BenchError(f"{kind}: pyinfra {' '.join(arguments)} exited {process.returncode}:\n{tail}")
    phases = tuple(
        (name, (marks[i + 1][1] if i + 1 < len(marks) else ended) - at) for i, (name, at) in enumerate(marks)
    )
    run = Run(
        kind=kind,
        seconds=ended - started,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        # Linux reports ru_maxrss in KiB: the largest resident set of the process (or a child it reaped).
        max_rss_kib=usage.ru_maxrss,
        phases=phases,
    )
    return run, lines


def _accepted_connections(lab: Lab) -> dict[str, int]:
    # sshd logs one "Accepted publickey" line per connection to the host's sshd.log (outside its overlay).
    counts = {}
    for host in lab.hosts:
        log = lab.layout.host_dir(host.name) / "sshd.log"
        counts[host.name] = log.read_text(errors="replace").count("Accepted publickey")
    return counts


def _shorten(command: str, width: int = 90) -> str:
    # pyinfra logs only the first line of a multi-line script; its first words are enough to name it.
    command = " ".join(command.removeprefix("sh -c ").strip("'").split())
    return command if len(command) <= width else command[: width - 3] + "..."


def count_commands(lab: Lab, inventory: Path, repository: Path) -> CommandCount:
    """Run the no-op redeploy once more with `--debug` (untimed) and count what it sends to each host."""
    before = _accepted_connections(lab)
    _run, lines = run_pyinfra(NOOP, ["--debug", str(inventory), str(DEPLOY)], repository)
    after = _accepted_connections(lab)
    commands: Counter[str] = Counter()
    uploads: Counter[str] = Counter()
    first_host = lab.hosts[0].name
    of_first: Counter[str] = Counter()
    scripts: dict[str, str] = {}
    for host_name, command in sent_commands(lines):
        commands[host_name] += 1
        if host_name == first_host:
            of_first[_shorten(command)] += 1
            scripts.setdefault(" ".join(command.split()), command)
    # The upload line names no host; a no-op run should have none at all.
    uploads["(any host)"] = sum(1 for line in lines if _UPLOAD_LINE.search(line))
    return CommandCount(
        commands_per_host={host.name: commands[host.name] for host in lab.hosts},
        uploads_per_host=dict(uploads),
        connections_per_host={name: after[name] - before[name] for name in after},
        commands_of_one_host=[(count, command) for command, count in of_first.most_common()],
        scripts_of_one_host=list(scripts.values()),
    )


def sent_commands(lines: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(host, command) for each command pyinfra's `--debug` log says it ran, whole, as it was sent.

    pyinfra logs a command as one record, `Running command on HOST: (pty=...) sh -c '...'`, whose
    multi-line script goes on over the next lines; the record ends where the command's quoting closes
    (the script's own lines can look like anything: `[ -d "$x" ]`, blank lines).
    """
    pending: tuple[str, list[str]] | None = None
    for line in lines:
        if pending is None:
            match = _COMMAND_LINE.search(line)
            if match is None:
                continue
            pending = (match["host"], [match["command"]])
        else:
            pending[1].append(line)
        command = "\n".join(pending[1])
        if _complete(command):
            yield pending[0], command
            pending = None


def _complete(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:  # "No closing quotation": the script goes on over the next line
        return False
    return True


def replay_commands(lab: Lab, scripts: Sequence[str], repeat: int = 3) -> list[tuple[str, float | None]]:
    """Run each command of a no-op redeploy again on one idle host: ms each, None if it failed.

    This is the command's own cost on the host, without SSH, pyinfra or other hosts competing for the
    machine's cores.
    """
    timed: list[tuple[str, float | None]] = []
    for script in scripts:
        loop = (
            f"start=$(date +%s%N); for _ in $(seq {repeat}); do {script} > /dev/null 2>&1 || exit 1; done; "
            f'echo "$(( ($(date +%s%N) - start) / {repeat} ))"'
        )
        result = lab.ssh(lab.hosts[0].name, loop, check=False)
        milliseconds = int(result.stdout.split()[-1]) / 1e6 if result.returncode == 0 else None
        timed.append((_shorten(script), milliseconds))
    return timed


def _time_calls_script(commands: Sequence[str], repeat: int) -> str:
    # One SSH session, so that only the command itself is timed: `date +%s%N` before and after a loop.
    parts = []
    for command in ("true", *commands):
        parts.append(
            f"start=$(date +%s%N); for _ in $(seq {repeat}); do {command} > /dev/null 2>&1; done; "
            f'echo "$(( ($(date +%s%N) - start) / {repeat} ))"'
        )
    return "; ".join(parts)


def time_emulated_calls(lab: Lab, repeat: int = 5) -> EmulatorCost:
    """Time, on one idle host, each command the verify step runs (what the emulators cost per call)."""
    output = lab.ssh(lab.hosts[0].name, _time_calls_script(_VERIFY_CALLS, repeat)).stdout.split()
    nanoseconds = [int(value) for value in output]
    return EmulatorCost(
        milliseconds={
            command: value / 1e6 for command, value in zip(_VERIFY_CALLS, nanoseconds[1:], strict=True)
        },
        baseline_milliseconds=nanoseconds[0] / 1e6,
    )


def run_benchmark(lab: Lab, repository: Path, rounds: int, ansible: bool = False) -> Results:
    """Run (c) once, then (a), (b) and (b') alternately `rounds` times, then count (b)'s commands.

    + ansible: also run the Ansible peer (d) in each round, after one untimed run (`ansible_peer`)
    """
    inventory = lab.layout.inventory
    hosts = [host for host in lab.hosts if host.os == "nixos"]
    results = Results(hosts=len(hosts), rounds=rounds, load=[os.getloadavg()])
    deploy = [str(inventory), str(DEPLOY)]
    plan = [(FIRST, deploy)]
    for _ in range(rounds):
        plan += [
            (FLOOR, [str(inventory), "exec", "--", "true"]),
            (NOOP, deploy),
            (NOOP_NO_WAIT, ["--no-wait", *deploy]),
        ]
        if ansible:
            # In the same rounds as (b), so that both see the same machine load.
            plan.append((ANSIBLE, []))
    peer = ansible_peer.AnsiblePeer.write(lab, repository, lab.directory / "ansible") if ansible else None
    try:
        for number, (kind, arguments) in enumerate(plan, start=1):
            if kind == ANSIBLE and peer is not None:
                run = _run_ansible_peer(peer, results)
            else:
                run, _lines = run_pyinfra(kind, arguments, repository)
            results.runs.append(run)
            click.echo(f"  [{number}/{len(plan)}] {KIND_LABELS[kind]}: {run.seconds:.2f} s", err=True)
        results.load.append(os.getloadavg())
    finally:
        if peer is not None:
            peer.remove_sockets()
    results.commands = count_commands(lab, inventory, repository)
    results.emulator = time_emulated_calls(lab)
    results.replayed = replay_commands(lab, results.commands.scripts_of_one_host)
    return results


def _run_ansible_peer(peer: ansible_peer.AnsiblePeer, results: Results) -> Run:
    # One untimed run first (as (c) is for the deploy); its changed= says whether the peer found the
    # files exactly as tailnix placed them.
    if not results.ansible_changed:
        results.ansible_changed.append(peer.run().changed)
    run = peer.run()
    results.ansible_changed.append(run.changed)
    return Run(ANSIBLE, run.seconds, run.cpu_seconds, run.max_rss_kib, phases=())


def _spread(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def _phase_medians(runs: Sequence[Run]) -> dict[str, float]:
    by_phase: dict[str, list[float]] = {}
    for run in runs:
        for name, seconds in run.phases:
            by_phase.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in by_phase.items()}


def render_report(results: Results) -> str:
    """The human table, then the machine-readable `key: value` lines."""
    lines = [
        f"tailnix bench: {results.hosts} hosts, {results.rounds} rounds; median (min-max)",
        "",
        f"{'run':<34} {'wall':>22} {'deployer CPU':>22} {'max RSS':>10}",
    ]
    for kind in (FLOOR, NOOP, NOOP_NO_WAIT, FIRST, ANSIBLE):
        runs = results.of(kind)
        if not runs:
            continue
        rss = results.peak_rss_mib(kind)
        lines.append(
            f"{KIND_LABELS[kind]:<34} {_spread([r.seconds for r in runs]):>22} "
            f"{_spread([r.cpu_seconds for r in runs]):>22} {rss:>7.0f} MiB"
        )
    ratio = results.ratio_noop_vs_floor
    lines += ["", f"ratio (b)/(a), medians: {ratio:.2f}"]
    if results.of(NOOP_NO_WAIT):
        no_wait = results.median_seconds(NOOP_NO_WAIT) / results.median_seconds(FLOOR)
        lines.append(f"ratio (b')/(a), medians: {no_wait:.2f}")
    if results.of(ANSIBLE):
        lines.append(f"ratio (d)/(b), medians: {results.ratio_ansible_vs_noop:.2f}")
        lines.append(f"ratio (d)/(b), deployer CPU medians: {results.cpu_ratio_ansible_vs_noop:.2f}")
        lines.append(
            "(d) tasks changed per Ansible run, the untimed first one included: "
            + ", ".join(map(str, results.ansible_changed))
        )

    commands = results.commands
    if commands is not None:
        per_host = sorted(set(commands.commands_per_host.values()))
        connections = sorted(set(commands.connections_per_host.values()))
        uploads = sum(commands.uploads_per_host.values())
        lines += [
            "",
            f"(b) SSH commands per host: {'/'.join(map(str, per_host))}; "
            f"connections per host: {'/'.join(map(str, connections))}; file uploads: {uploads}",
            "    on one host, from pyinfra --debug:",
        ]
        lines += [f"    {count} x {command}" for count, command in commands.commands_of_one_host]

    lines += ["", "phases, median seconds (a pyinfra phase runs from one `-->` line to the next):"]
    floor, noop = _phase_medians(results.of(FLOOR)), _phase_medians(results.of(NOOP))
    lines.append(f"    {'phase':<58} {'(a)':>7} {'(b)':>7}")
    for name in [*floor, *[n for n in noop if n not in floor]]:
        a = f"{floor[name]:.2f}" if name in floor else "-"
        b = f"{noop[name]:.2f}" if name in noop else "-"
        lines.append(f"    {name[:58]:<58} {a:>7} {b:>7}")

    emulator = results.emulator
    if emulator is not None:
        lines += ["", "emulated commands of the verify step, one idle host, ms per call:"]
        lines.append(f"    {emulator.baseline_milliseconds:7.1f}  true (loop overhead)")
        lines += [f"    {ms:7.1f}  {command}" for command, ms in emulator.milliseconds.items()]

    if results.replayed:
        cores = os.cpu_count() or 1
        lines += [
            "",
            f"each command of (b) replayed on one idle host, ms; x {results.hosts} hosts / {cores} cores "
            "= the least wall time the fleet's commands take when they are CPU-bound:",
        ]
        for command, ms in results.replayed:
            cost = "failed" if ms is None else f"{ms:7.1f}  ({ms * results.hosts / cores / 1000:.2f} s)"
            lines.append(f"    {cost:>18}  {command}")

    if results.load:
        lines += [
            "",
            "machine load (1, 5, 15 min) as the runs began and ended: "
            + "; ".join(" ".join(f"{value:.2f}" for value in load) for load in results.load),
        ]
    lines += [
        "",
        f"ratio_noop_vs_floor: {ratio:.3f}",
        f"hosts: {results.hosts}",
        f"floor_seconds: {results.median_seconds(FLOOR):.3f}",
        f"noop_seconds: {results.median_seconds(NOOP):.3f}",
    ]
    if results.of(FIRST):
        first = results.of(FIRST)[0]
        lines += [
            f"first_deploy_seconds: {first.seconds:.3f}",
            # Per host: flat when the first deploy scales linearly with the fleet.
            f"first_deploy_ms_per_host: {first.seconds * 1000 / results.hosts:.1f}",
            f"first_deploy_cpu_ms_per_host: {first.cpu_seconds * 1000 / results.hosts:.1f}",
        ]
    if commands is not None:
        lines.append(f"ssh_commands_per_host: {max(commands.commands_per_host.values())}")
    if results.of(ANSIBLE):
        lines.append(f"ratio_ansible_vs_noop: {results.ratio_ansible_vs_noop:.3f}")
        lines.append(f"ratio_ansible_vs_noop_cpu: {results.cpu_ratio_ansible_vs_noop:.3f}")
        lines.append(f"ansible_noop_seconds: {results.median_seconds(ANSIBLE):.3f}")
        lines.append(f"ansible_changed_per_run: {','.join(map(str, results.ansible_changed))}")
    # pyinfra's runs only: the Ansible peer's memory is its own row.
    pyinfra_rss = max(run.max_rss_kib for run in results.runs if run.kind != ANSIBLE)
    floor_rss, noop_rss = results.peak_rss_mib(FLOOR), results.peak_rss_mib(NOOP)
    lines += [
        f"max_rss_mib: {pyinfra_rss / 1024:.1f}",
        f"floor_max_rss_mib: {floor_rss:.1f}",
        f"noop_max_rss_mib: {noop_rss:.1f}",
        f"noop_rss_over_floor_mib: {noop_rss - floor_rss:.1f}",
    ]
    return "\n".join(lines)


def _raise_open_file_limit() -> None:
    """Let the bench and its pyinfra runs open as many files as the system allows them.

    A deploy holds an SSH connection per host and opens a second one to confirm a switch, so 500 hosts
    come close to the usual soft limit of 1024 descriptors.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into SystemExit, so that the lab is torn down as on Ctrl-C."""

    def leave(signal_number: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signal_number)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def bench_lab(hosts: int, directory: Path | None) -> Iterator[Lab]:
    """A lab of `hosts` NixOS hosts that is stopped (and its directory removed) however the bench ends."""
    owned = directory is None
    root = Path(tempfile.mkdtemp(prefix="tailnix-bench-")) if directory is None else directory
    with _terminate_as_exit():
        try:
            lab = Lab.up(root, hosts)  # stops what it started if it fails
            try:
                yield lab
            finally:
                lab.down()
        finally:
            if owned:
                _remove_lab_directory(root)


REMOVE_TIMEOUT_SECONDS = 30.0


def _remove_lab_directory(root: Path) -> None:
    """Remove the bench's own lab directory; say so when it cannot, after a bounded wait.

    A host's directories stay mount points in its namespace until the kernel has let the namespace go,
    a moment after its last process ended: removing them at once failed (EBUSY), and every bench left
    its lab behind (380 MB at 500 hosts).
    """
    deadline = time.monotonic() + REMOVE_TIMEOUT_SECONDS
    while True:
        try:
            shutil.rmtree(root)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if time.monotonic() > deadline:
                click.echo(
                    f"could not remove the bench's lab directory {root} after {REMOVE_TIMEOUT_SECONDS:.0f}s "
                    f"of trying ({error}); remove it by hand",
                    err=True,
                )
                return
            time.sleep(0.5)


@click.command("bench")
@click.option("--hosts", type=click.IntRange(min=1), default=20, show_default=True, help="Lab hosts.")
@click.option(
    "--rounds", type=click.IntRange(min=1), default=5, show_default=True, help="Alternations of (a)/(b)."
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Lab directory (default: a new one under the temporary directory, removed afterwards).",
)
@click.option(
    "--repository",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The checkout whose deploy is measured (e.g. an older one, to compare before and after).",
)
@click.option(
    "--ansible",
    is_flag=True,
    help="Also run the deploy's steps as an Ansible playbook (d) in each round, and compare with (b).",
)
@click.option(
    "--boot",
    is_flag=True,
    help="Also time boot to Running of three more hosts (tailnix's unit, NixOS's own, the seed recipe), "
    "ROUNDS first boots each.",
)
def bench(
    hosts: int, rounds: int, directory: Path | None, repository: Path, ansible: bool, boot: bool
) -> None:
    """Time a no-op redeploy of an N-host lab against a bare pyinfra run; print where the time goes.

    The deploy runs from the repository root, as the README runs it: deploys/tailscale.py.

    Example: tailnix bench --hosts 20 --rounds 5 --ansible --boot
    """
    repository = repository.resolve()
    _raise_open_file_limit()
    if not (repository / DEPLOY).is_file():
        raise click.ClickException(f"no {DEPLOY} in {repository}: give the repository root with --repository")
    try:
        with bench_lab(hosts, directory) as lab:
            click.echo(f"lab of {hosts} hosts up in {lab.directory}", err=True)
            results = run_benchmark(lab, repository, rounds, ansible=ansible)
            # Last: it adds hosts to the lab, which the runs above must not see.
            boots = boot_bench.run_boot_bench(lab, repository, rounds) if boot else None
    except (LabError, BenchError, ansible_peer.AnsibleError, boot_bench.BootBenchError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(render_report(results))
    if boots is not None:
        click.echo(boot_bench.render_boot_report(boots))
