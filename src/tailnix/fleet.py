"""The fleet around the deploy: who is in it, their recipients in `.sops.yaml`, running and reading the deploy.

Everything that touches hosts goes through the pyinfra CLI (`pyinfra -y --json INVENTORY ...`) as a
subprocess, with the inventory's own SSH settings; what it prints is read back into small typed values.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyinfra.api.facts import FactBase
from pyinfra.api.state import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from tailnix import paths
from tailnix.agekey import KeyFormatError, ssh_public_key_to_age
from tailnix.operations import REFUSED
from tailnix.plan import plan_host
from tailnix.secrets_file import read_sealed
from tailnix.settings import SettingsError, parse_settings
from tailnix.sops import NotEncryptedError, SopsError, read_metadata, rotate_data_key, update_keys
from tailnix.sops_config import SopsConfig, SopsConfigError, write_config
from tailnix.sudo import login_user, password_refusal, sudo_refusal

HOST_KEY_FACT = "tailnix.fleet.HostKey"
FLEET_STATUS_FACT = "tailnix.fleet.FleetHostStatus"
SUDO_FACT = "tailnix.sudo.SudoAccess"
SOPS_CONFIG_NAME = ".sops.yaml"
# The deploy's last operation: a host that reports on it has finished.
FINAL_OPERATIONS = ("Verify Tailscale is Running", "Check the host and that Tailscale is Running")
"""A host's last operation: the verification after changes, or the one check of a host that needed none."""
SWITCH_OPERATION = "nixos-rebuild switch"


class FleetError(ValueError):
    """Something the user can fix: a bad inventory, an unknown host, a `.sops.yaml` tailnix cannot edit."""


# --- the inventory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetHost:
    """One inventory host: its name, the groups it is in, and its merged data."""

    name: str
    groups: tuple[str, ...]
    data: Mapping[str, Any]


def load_fleet(inventory_file: Path) -> list[FleetHost]:
    """Every host of a pyinfra inventory file, with group_data applied, in inventory order."""
    if not inventory_file.is_file():
        raise FleetError(f"inventory {inventory_file} does not exist")
    try:
        with ctx_state.use(State()):
            inventory = make_inventory(str(inventory_file), cwd=os.getcwd())
    except Exception as error:  # pyinfra raises many kinds for a broken inventory file
        raise FleetError(f"cannot load inventory {inventory_file}: {error}") from None
    return [
        FleetHost(host.name, tuple(sorted(str(group) for group in host.groups)), dict(host.data.dict()))
        for host in inventory
    ]


def select_hosts(fleet: list[FleetHost], names: Iterable[str], groups: Iterable[str]) -> list[FleetHost]:
    """The hosts named, plus every host of the groups named (all hosts when neither is given)."""
    names, groups = list(names), list(groups)
    known_groups = {group for host in fleet for group in host.groups}
    unknown = [n for n in names if n not in {h.name for h in fleet}]
    unknown += [g for g in groups if g not in known_groups and g not in {h.name for h in fleet}]
    if unknown:
        listed = ", ".join(h.name for h in fleet) or "none"
        raise FleetError(f"not in the inventory: {', '.join(unknown)} (hosts: {listed})")
    if not names and not groups:
        return list(fleet)
    return [h for h in fleet if h.name in names or h.name in groups or set(h.groups) & set(groups)]


@dataclass(frozen=True)
class SecretsLocation:
    """The secrets file the hosts share, the `.sops.yaml` that governs it, and the secret's name."""

    secrets_file: Path
    sops_config: Path
    secret_name: str


def find_sops_config(secrets_file: Path) -> Path:
    """The nearest `.sops.yaml` in the secrets file's directory or above it."""
    for directory in [secrets_file.parent.resolve(), *secrets_file.parent.resolve().parents]:
        candidate = directory / SOPS_CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise FleetError(f"no {SOPS_CONFIG_NAME} in {secrets_file.parent} or above it; pass --sops-config")


def secrets_location(
    hosts: list[FleetHost],
    *,
    secrets_file: Path | None = None,
    sops_config: Path | None = None,
) -> SecretsLocation:
    """Where the hosts' secrets are: from their settings, unless given; all hosts must share one file."""
    files: dict[Path, list[str]] = {}
    names: set[str] = set()
    for host in hosts:
        try:
            settings = parse_settings(host.name, host.data)
        except SettingsError as error:
            raise FleetError(str(error)) from None
        files.setdefault(settings.secrets_file, []).append(host.name)
        names.add(settings.secret_name)
    if secrets_file is None:
        if len(files) > 1:
            shown = "; ".join(f"{path} ({', '.join(members)})" for path, members in files.items())
            raise FleetError(f"the hosts use different secrets files: {shown}; name one with --secrets-file")
        secrets_file = next(iter(files), Path("secrets/tailscale.yaml"))
    if len(names) > 1:
        raise FleetError(f"the hosts use different secret names: {', '.join(sorted(names))}")
    secret_name = next(iter(names), "tailscale_auth_key")
    config = sops_config if sops_config is not None else find_sops_config(secrets_file)
    return SecretsLocation(secrets_file.absolute(), config.absolute(), secret_name)


# --- running pyinfra ------------------------------------------------------------------------------


def pyinfra_command() -> str:
    """The pyinfra CLI beside the running Python (the virtualenv's), or the one on PATH."""
    beside = Path(sys.executable).parent / "pyinfra"
    return str(beside) if beside.exists() else "pyinfra"


def default_deploy_file() -> Path:
    """`deploys/tailscale.py` of the current directory, or of the tailnix source tree."""
    here = Path("deploys/tailscale.py")
    if here.is_file():
        return here
    return Path(__file__).resolve().parents[2] / "deploys" / "tailscale.py"


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
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("-->")]
    return lines[-1] if lines else ""


# --- bootstrap and forget -------------------------------------------------------------------------


class HostKey(FactBase[dict[str, str]]):
    """The host's OS id and the `ssh-ed25519 AAAA...` line of its SSH host key (empty when missing)."""

    def command(self) -> str:
        return "; ".join(
            [
                "ID=",
                ". /etc/os-release 2>/dev/null",
                'echo "os_id=$ID"',
                f'echo "host_key=$(head -n 1 {shlex.quote(paths.HOST_KEY_PUBLIC)} 2>/dev/null)"',
                "true",
            ]
        )

    def process(self, output: list[str]) -> dict[str, str]:
        return {key.strip(): value.strip() for key, _, value in (line.partition("=") for line in output)}


@dataclass(frozen=True)
class RecipientChange:
    """What bootstrap did, or refused to do, with one host's recipient."""

    host: str
    outcome: str
    """added, replaced, unchanged, or failed."""
    message: str
    recipient: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the host can go on to be deployed."""
        return self.outcome != "failed"


@dataclass
class RecipientUpdate:
    """The result of recording recipients: per host, and whether the files changed."""

    changes: list[RecipientChange] = field(default_factory=list)
    config_changed: bool = False
    secrets_reencrypted: bool = False


def _recipient_of(host: str, state: Mapping[str, Any]) -> str:
    if state.get("os_id") != "nixos":
        raise FleetError(f"{host} is not NixOS (os-release ID={state.get('os_id') or 'none'})")
    host_key = state.get("host_key")
    if not host_key:
        raise FleetError(f"{host} has no {paths.HOST_KEY_PUBLIC}; NixOS makes one when openssh is enabled")
    try:
        return ssh_public_key_to_age(str(host_key))
    except KeyFormatError as error:
        raise FleetError(f"{host}: {paths.HOST_KEY_PUBLIC}: {error}") from None


def record_recipients(
    inventory_file: Path,
    hosts: list[FleetHost],
    location: SecretsLocation,
    *,
    replace_key: bool,
) -> RecipientUpdate:
    """Read each host's SSH host key, record its age recipient in `.sops.yaml`, re-encrypt if needed.

    A host whose key differs from the recipient recorded under its name is refused unless `replace_key`;
    a host that cannot be reached changes nothing. The secrets file is re-encrypted (`updatekeys`) when
    its recipients differ from the key group's, and `.sops.yaml` is put back if that fails.
    """
    config = _read_config(location)
    try:
        # The hosts get this file after the bootstrap: refuse it before reading any of them.
        read_sealed(location.secrets_file, location.secret_name)
    except NotEncryptedError as error:
        raise FleetError(f"refusing to give the hosts {location.secrets_file}: {error}") from None
    reading = read_fact(inventory_file, HOST_KEY_FACT, hosts)
    update = RecipientUpdate()
    text = config.text
    for host in hosts:
        if host.name in reading.refused:
            update.changes.append(RecipientChange(host.name, "failed", reading.refused[host.name]))
            continue
        if host.name in reading.errors:
            update.changes.append(
                RecipientChange(host.name, "failed", f"cannot read its host key: {reading.errors[host.name]}")
            )
            continue
        try:
            recipient = _recipient_of(host.name, reading.values[host.name])
        except FleetError as error:
            update.changes.append(RecipientChange(host.name, "failed", str(error)))
            continue
        current = SopsConfig(text, config.secrets_path)
        recorded = current.named(host.name)
        listed = [r for r in current.recipients() if r.recipient == recipient]
        if recorded == recipient and any(r.name == host.name for r in listed):
            update.changes.append(RecipientChange(host.name, "unchanged", "already a recipient", recipient))
            continue
        if recorded is None and listed:
            name = listed[0].name
            shown = f"as &{name}" if name else "unnamed"
            update.changes.append(
                RecipientChange(host.name, "unchanged", f"already a recipient ({shown})", recipient)
            )
            continue
        if recorded is not None and recorded != recipient and not replace_key:
            update.changes.append(
                RecipientChange(
                    host.name,
                    "failed",
                    f"its SSH host key changed: it is {recipient} but .sops.yaml records {recorded}; "
                    "if the machine was reinstalled, run again with --replace-key",
                    recipient,
                )
            )
            continue
        try:
            text = current.with_recipient(host.name, recipient)
        except SopsConfigError as error:
            update.changes.append(RecipientChange(host.name, "failed", str(error)))
            continue
        outcome = "replaced" if recorded is not None else "added"
        update.changes.append(RecipientChange(host.name, outcome, f"recipient {outcome}", recipient))
    update.config_changed = text != config.text
    _apply(location, config, text, update)
    return update


def forget_recipient(location: SecretsLocation, name: str) -> RecipientUpdate:
    """Remove the recipient named `name` from `.sops.yaml`, re-encrypt, and give the file a new data key."""
    config = _read_config(location)
    try:
        text = config.without_recipient(name)
    except SopsConfigError as error:
        raise FleetError(f"{location.sops_config}: {error}") from None
    update = RecipientUpdate(
        [RecipientChange(name, "removed", "recipient removed", config.named(name))], config_changed=True
    )
    _apply(location, config, text, update, new_data_key=True)
    return update


def _read_config(location: SecretsLocation) -> SopsConfig:
    if not location.secrets_file.is_file():
        raise FleetError(f"the secrets file {location.secrets_file} does not exist (see the README)")
    try:
        return SopsConfig.read(location.sops_config, location.secrets_file)
    except SopsConfigError as error:
        raise FleetError(str(error)) from None


def _apply(
    location: SecretsLocation,
    config: SopsConfig,
    after: str,
    update: RecipientUpdate,
    *,
    new_data_key: bool = False,
) -> None:
    """Write `.sops.yaml` and re-encrypt the secrets file; on failure put both back as they were."""
    before = config.text
    wanted = {r.recipient for r in SopsConfig(after, config.secrets_path).recipients()}
    has = set(read_metadata(location.secrets_file).recipients)
    if after == before and wanted == has:
        return
    original_secrets = location.secrets_file.read_bytes()
    if after != before:
        write_config(location.sops_config, after)
    try:
        update_keys(location.secrets_file, config=location.sops_config)
        if new_data_key:
            rotate_data_key(location.secrets_file, config=location.sops_config)
    except SopsError as error:
        write_config(location.sops_config, before)
        location.secrets_file.write_bytes(original_secrets)
        raise FleetError(
            f"{error}; {location.sops_config.name} and {location.secrets_file.name} were left as they were "
            "(sops needs an admin age key: SOPS_AGE_KEY_FILE)"
        ) from None
    update.secrets_reencrypted = True


# --- the deploy -----------------------------------------------------------------------------------


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
            if operation == SWITCH_OPERATION and text == "Success":
                switched.add(host)
            if operation in FINAL_OPERATIONS:
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
        if op.get("name") == SWITCH_OPERATION
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


# --- status ---------------------------------------------------------------------------------------


class FleetHostStatus(FactBase[dict[str, Any]]):
    """What `tailnix status` reports of a host: its OS, the last switch, and `tailscale status --json`."""

    def command(self) -> str:
        applied = shlex.quote(paths.APPLIED_FILE)
        return "; ".join(
            [
                "ID= VERSION_ID=",
                ". /etc/os-release 2>/dev/null",
                'echo "os_id=$ID"',
                'echo "os_version=$VERSION_ID"',
                f'echo "applied=$(cat {applied} 2>/dev/null)"',
                f'echo "applied_mtime=$(stat -c %Y {applied} 2>/dev/null)"',
                'echo "tailscale_b64=$(tailscale status --json 2>/dev/null | base64 -w 0)"',
                "true",
            ]
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.partition("=")[::2] for line in output)
        status: Any = None
        try:
            decoded = base64.b64decode(values.get("tailscale_b64", "")).decode()
            status = json.loads(decoded) if decoded.strip() else None
        except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
            status = None
        mtime = values.get("applied_mtime", "")
        return {
            "os_id": values.get("os_id", ""),
            "os_version": values.get("os_version", ""),
            "applied": values.get("applied") or None,
            "applied_mtime": int(mtime) if mtime.isdigit() else None,
            "tailscale": status if isinstance(status, dict) else None,
        }


STATUS_SCHEMA_VERSION = 1


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fleet_status(inventory_file: Path, hosts: list[FleetHost]) -> dict[str, Any]:
    """The health of every host and of the mesh, as the documented `tailnix status --json` document."""
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, hosts)
    entries: list[dict[str, Any]] = []
    node_ids: dict[str, str] = {}
    peers_of: dict[str, dict[str, bool]] = {}
    for host in hosts:
        entry: dict[str, Any] = {
            "name": host.name,
            "reachable": host.name not in reading.errors,
            "nixos_version": None,
            "backend_state": None,
            "tailscale_ips": [],
            "dns_name": None,
            "node_key_expiry": None,
            "module_current": None,
            "last_switch": None,
            "problems": [],
            "healthy": False,
        }
        entries.append(entry)
        problems: list[str] = entry["problems"]
        if host.name in reading.refused:
            problems.append(reading.refused[host.name])
            continue
        if host.name in reading.errors:
            problems.append(f"unreachable: {reading.errors[host.name]}")
            continue
        value = reading.values[host.name]
        if value["os_id"] != "nixos":
            problems.append(f"not NixOS (os-release ID={value['os_id'] or 'none'})")
        else:
            entry["nixos_version"] = value["os_version"] or None
        entry["last_switch"] = _iso(value["applied_mtime"])
        try:
            plan = plan_host(host.name, host.data)
            # A flake host that brings its own sops-nix gets the module without the fetched copy.
            current = {plan.fingerprint, plan.fingerprint_for(plan.module_for_sops_nix_flake)}
            entry["module_current"] = value["applied"] in current
            if not entry["module_current"]:
                problems.append(
                    "never switched by tailnix"
                    if value["applied"] is None
                    else "its secrets file or module is not the current one; run `tailnix deploy`"
                )
        except SettingsError as error:
            problems.append(str(error))
        status = value["tailscale"]
        if status is None:
            problems.append("tailscaled does not answer")
            continue
        entry["backend_state"] = status.get("BackendState")
        own = status.get("Self") or {}
        entry["tailscale_ips"] = list(own.get("TailscaleIPs") or [])
        entry["dns_name"] = own.get("DNSName") or None
        entry["node_key_expiry"] = own.get("KeyExpiry")
        if entry["backend_state"] != "Running":
            problems.append(f"BackendState is {entry['backend_state']}")
            continue
        if own.get("ID"):
            node_ids[host.name] = str(own["ID"])
        peers_of[host.name] = {
            str(peer.get("ID")): bool(peer.get("Online")) for peer in (status.get("Peer") or {}).values()
        }
    mesh: list[str] = []
    by_name = {entry["name"]: entry for entry in entries}
    for name, peers in peers_of.items():
        for other, node_id in node_ids.items():
            if other == name:
                continue
            if node_id not in peers:
                problem = f"{name} does not see {other} as a peer"
            elif not peers[node_id]:
                problem = f"{name} sees {other} offline"
            else:
                continue
            mesh.append(problem)
            by_name[name]["problems"].append(problem)
    for entry in entries:
        entry["healthy"] = not entry["problems"]
    return {
        "schema": STATUS_SCHEMA_VERSION,
        "healthy": all(entry["healthy"] for entry in entries),
        "hosts": entries,
        # Complete only when every host is on the tailnet and sees every other one online.
        "mesh": {
            "ok": not mesh and len(node_ids) == len(entries),
            "members": sorted(node_ids),
            "problems": mesh,
        },
    }
