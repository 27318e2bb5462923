"""Running pyinfra for the fleet commands, and reading back what it did.

Everything that touches hosts goes through the pyinfra CLI (`pyinfra -y --json INVENTORY ...`) as a
subprocess, with the inventory's own SSH settings; what it prints is read back into small typed values.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailnix import steps
from tailnix.fleet import FleetError, FleetHost
from tailnix.operations import REFUSED
from tailnix.sudo import login_user, password_refusal, sudo_refusal

SUDO_FACT = "tailnix.sudo.SudoAccess"


def pyinfra_command() -> str:
    """The pyinfra CLI beside the running Python (the virtualenv's), or the one on PATH."""
    beside = Path(sys.executable).parent / "pyinfra"
    return str(beside) if beside.exists() else "pyinfra"


def default_deploy_file() -> Path:
    """`deploys/tailscale.py` of the current directory, or the installed package's (what `tailnix init` writes)."""
    here = Path("deploys/tailscale.py")
    if here.is_file():
        return here
    return Path(__file__).resolve().parent / "deploys" / "tailscale.py"


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
        [pyinfra_command(), "-y", "--json", *options, str(inventory_file), "fact", fact, *_limits(hosts)],
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
            errors[name] = failures.get(name) or _last_words(stderr) or "no answer"
    found = {k: v for k, v in values.items() if v is not None and k in asked}
    return FactReading(found, errors, refused)


def _last_words(stderr: str) -> str:
    # A refusal while the deploy file loads (a SettingsError) is pyinfra's own last line:
    # "--> pyinfra error in FILE line N: host H: ...".
    for line in reversed(stderr.splitlines()):
        error = re.match(r"--> pyinfra error in \S+ line \d+: (.+)", line.strip())
        if error:
            return error.group(1)
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("-->")]
    return lines[-1] if lines else ""


@dataclass
class HostDeployResult:
    """How the deploy went on one host."""

    host: str
    ok: bool
    switched: bool = False
    detail: str = ""


@dataclass
class DeployOutcome:
    """The result of a (possibly batched) deploy."""

    hosts: list[HostDeployResult] = field(default_factory=list)
    not_attempted: list[str] = field(default_factory=list)
    stopped_reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether every host was deployed successfully."""
        return all(h.ok for h in self.hosts) and not self.not_attempted


def _read_progress(
    stream: Iterable[str], on_host: Callable[[HostDeployResult], None], collected: list[str]
) -> dict[str, HostDeployResult]:
    """Follow pyinfra's output; report each host once it has finished or failed."""
    operation = ""
    notes: dict[str, str] = {}
    switched: set[str] = set()
    done: dict[str, HostDeployResult] = {}
    for line in stream:
        collected.append(line)
        if line.startswith("--> Starting operation:"):
            operation = line.split(":", 1)[1].strip()
            continue
        match = _HOST_LINE.match(line)
        if not match or match["host"] in done:
            continue
        host, text = match["host"], match["text"]
        if text.startswith("Could not connect"):
            done[host] = HostDeployResult(host, False, detail=text)
        elif text.startswith("Error"):
            detail = notes.get(host) or text
            # A host refused while the deploy is prepared fails before any operation starts.
            where = f"{operation}: " if operation else ""
            done[host] = HostDeployResult(host, False, host in switched, f"{where}{detail}")
        elif text in ("Success", "No changes"):
            if operation == steps.SWITCH and text == "Success":
                switched.add(host)
            if operation in steps.FINAL:
                done[host] = HostDeployResult(host, True, host in switched, notes.get(host, ""))
            else:
                continue
        elif text.startswith(("Ready:", "Connected", "Loaded fact")):
            continue
        else:
            notes[host] = text
            continue
        on_host(done[host])
    return done


def run_deploy(
    inventory_file: Path,
    hosts: list[str],
    *,
    deploy_file: Path | None = None,
    fail_percent: int | None = None,
    on_host: Callable[[HostDeployResult], None] = lambda _result: None,
) -> list[HostDeployResult]:
    """Deploy to `hosts` with one `pyinfra -y --json` run; `on_host` hears of each host as it finishes."""
    command = [
        pyinfra_command(),
        "-y",
        "--json",
        str(inventory_file),
        str(deploy_file or default_deploy_file()),
    ]
    command += _limits(hosts)
    if fail_percent is not None:
        command += ["--fail-percent", str(fail_percent)]
    collected: list[str] = []
    # JSON results go to a file: a pipe nobody reads while the run is going could fill up and stall it.
    with tempfile.TemporaryFile("w+") as results:
        process = subprocess.Popen(command, stdout=results, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        with process.stderr:
            done = _read_progress(process.stderr, on_host, collected)
        process.wait()
        results.seek(0)
        payload = _json_payload(results.read())
    failed = set((payload or {}).get("results", {}).get("failed_hosts") or [])
    switch = [
        op
        for op in (payload or {}).get("results", {}).get("operations", [])
        if op.get("name") == steps.SWITCH
    ]
    switched = set(switch[0].get("success", [])) if switch else set()
    outcome = []
    for host in hosts:
        result = done.get(host)
        if result is None:
            ok = payload is not None and host not in failed and process.returncode == 0
            detail = "" if ok else _last_words("".join(collected)) or f"pyinfra exited {process.returncode}"
            result = HostDeployResult(host, ok, host in switched, detail)
            on_host(result)
        elif host in failed and result.ok:
            result.ok = False
        result.switched = result.switched or host in switched
        outcome.append(result)
    return outcome


def run_batched_deploy(
    inventory_file: Path,
    hosts: list[str],
    *,
    batch: int | None,
    fail_percent: int | None,
    deploy_file: Path | None = None,
    on_host: Callable[[HostDeployResult], None] = lambda _result: None,
) -> DeployOutcome:
    """Deploy in batches of `batch` hosts; stop before the next batch when more than `fail_percent`% failed."""
    size = batch or len(hosts) or 1
    outcome = DeployOutcome()
    for start in range(0, len(hosts), size):
        chunk = hosts[start : start + size]
        outcome.hosts += run_deploy(
            inventory_file, chunk, deploy_file=deploy_file, fail_percent=fail_percent, on_host=on_host
        )
        failed = sum(not h.ok for h in outcome.hosts)
        limit = 0 if fail_percent is None else fail_percent
        rest = hosts[start + size :]
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
    """What a deploy would change, per host: the names of the operations that would run commands."""
    result = subprocess.run(
        [
            pyinfra_command(), "--dry", "--json", str(inventory_file),
            str(deploy_file or default_deploy_file()), *_limits(hosts),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    payload = _json_payload(result.stdout)
    if payload is None:
        raise FleetError(f"the dry run failed: {_last_words(result.stderr) or result.returncode}")
    changes: dict[str, list[str]] = {host: [] for host in hosts}
    for operation in payload.get("plan", []):
        for host in operation.get("hosts_with_change", []) + operation.get(
            "hosts_with_conditional_change", []
        ):
            if host in changes and operation["name"] not in changes[host]:
                changes[host].append(operation["name"])
    failed = _connect_failures(result.stderr)
    for host in failed:
        changes[host] = [f"unreachable: {failed[host]}"]
    for host, reason in _refusals(result.stderr).items():
        changes[host] = [f"refused: {reason}"]
    return changes


def _refusals(stderr: str) -> dict[str, str]:
    """Hosts the deploy refused while it was prepared, with the reason (the line before `REFUSED`)."""
    refusals: dict[str, str] = {}
    last: dict[str, str] = {}
    for line in stderr.splitlines():
        match = _HOST_LINE.match(line)
        if not match:
            continue
        if match["text"] == REFUSED:
            refusals[match["host"]] = last.get(match["host"], "")
        last[match["host"]] = match["text"]
    return refusals
