"""Activation of an evaluated configuration on a lab host, as NixOS's switch-to-configuration does it.

Generations live in `/var/lib/tailnix-lab/profiles/system-N-link/` (a lab host shares `/nix` with
every other host, so its profiles live under its own `/var`); each keeps the evaluated
configuration (`configuration.json`) and its system profile (`sw/bin`). `/run/current-system`
points at the running one and `profiles/system` at the boot default.

Activation decrypts `sops.secrets` as sops-nix does (the real sops, the host's SSH key converted to
an age identity), then stops, restarts and starts units the way switch-to-configuration decides:
units that left the configuration stop; changed ones restart; new ones, failed ones and those whose
definition never ran start when `multi-user.target` wants them; a changed secret restarts its
`restartUnits`.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailnix.agekey import ssh_private_key_to_age_identity
from tailnix_lab.emulator import systemctl, units
from tailnix_lab.emulator.hostroot import host_path, host_root

PROFILES_DIR = "/var/lib/tailnix-lab/profiles"
CURRENT_SYSTEM = "/run/current-system"
SECRETS_MOUNT = "/run/secrets.d"
SECRETS_LINK = "/run/secrets"
SOPS_BINARY = "/run/tailnix-lab/bin/sops"
SOPS_ENV = "TAILNIX_LAB_SOPS"
TAILSCALE_CLI = "/usr/local/sbin/tailscale"

# A name systemd can load as a unit (systemd's unit_name_is_valid, for the unit types NixOS declares).
VALID_UNIT_NAME = re.compile(
    r"[a-zA-Z0-9:_.\\@-]+\.(service|socket|device|mount|automount|swap|target|path|timer|scope|slice)"
)

# Activation failed (switch-to-configuration's exit status 2), a unit failed (4).
ACTIVATION_FAILED = 2
UNITS_FAILED = 4

# The lab's store: one directory per package of the `pkgs` stand-in (pkgs.nix gives the same out paths).
STORE_DIR = "/var/lib/tailnix-lab/store"
PACKAGES_FILE = Path(__file__).with_name("packages.json")
# systemd's commands, emulated: command -> (module of tailnix_lab.emulator, leading arguments).
LAB_COMMANDS = {
    "systemd-notify": ("units", "notify "),
    "systemctl": ("systemctl", ""),
    "journalctl": ("journalctl", ""),
    "systemd-run": ("systemd_run", ""),
}

# The commands a NixOS system profile has, linked from this machine's own.
PROFILE_COMMANDS = [
    "bash",
    "sh",
    "cat",
    "ls",
    "cp",
    "mv",
    "rm",
    "ln",
    "mkdir",
    "rmdir",
    "chmod",
    "chown",
    "touch",
    "echo",
    "printf",
    "true",
    "false",
    "test",
    "[",
    "env",
    "sleep",
    "head",
    "tail",
    "sort",
    "uniq",
    "wc",
    "tr",
    "cut",
    "date",
    "id",
    "whoami",
    "tee",
    "stat",
    "mktemp",
    "install",
    "dirname",
    "basename",
    "readlink",
    "realpath",
    "seq",
    "yes",
    "timeout",
    "uname",
    "df",
    "du",
    "sha256sum",
    "base64",
    "md5sum",
    "nproc",
    "hostname",
    "grep",
    "egrep",
    "fgrep",
    "sed",
    "awk",
    "gawk",
    "find",
    "xargs",
    "jq",
    "ps",
    "kill",
    "pkill",
    "pgrep",
    "getent",
    "ip",
    "ssh",
    "ssh-keygen",
    "tar",
    "gzip",
    "xz",
    "less",
    "which",
    "diff",
    "cmp",
    "logger",
    "flock",
]


@dataclass
class Generation:
    """One system generation on the host."""

    number: int

    @property
    def host_path(self) -> str:
        """The generation as the host names it."""
        return f"{PROFILES_DIR}/system-{self.number}-link"

    @property
    def directory(self) -> Path:
        """Where the generation really is."""
        return host_path(self.host_path)

    def configuration(self) -> dict[str, Any]:
        """The evaluated configuration the generation was built from."""
        data: dict[str, Any] = json.loads((self.directory / "configuration.json").read_text())
        return data


def generations() -> list[Generation]:
    """Every generation on the host, oldest first."""
    root = host_path(PROFILES_DIR)
    if not root.is_dir():
        return []
    numbers = []
    for entry in root.iterdir():
        name = entry.name
        if name.startswith("system-") and name.endswith("-link"):
            middle = name[len("system-") : -len("-link")]
            if middle.isdigit():
                numbers.append(int(middle))
    return [Generation(n) for n in sorted(numbers)]


def default_generation() -> Generation | None:
    """The generation `profiles/system` points at (what boots, and what --rollback steps back from)."""
    link = host_path(f"{PROFILES_DIR}/system")
    try:
        target = os.readlink(link)
    except OSError:
        return None
    name = Path(target).name
    middle = name[len("system-") : -len("-link")]
    return Generation(int(middle)) if middle.isdigit() else None


def add_generation(evaluated: dict[str, Any]) -> Generation:
    """Record a new generation holding the evaluated configuration."""
    existing = generations()
    generation = Generation(existing[-1].number + 1 if existing else 1)
    directory = generation.directory
    directory.mkdir(parents=True)
    (directory / "configuration.json").write_text(json.dumps(evaluated, indent=2, sort_keys=True) + "\n")
    return generation


def set_default(generation: Generation) -> None:
    """Point `profiles/system` at a generation."""
    _replace_symlink(host_path(f"{PROFILES_DIR}/system"), f"system-{generation.number}-link")


def _replace_symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def say(message: str) -> None:
    """switch-to-configuration talks on stderr."""
    print(message, file=sys.stderr, flush=True)


# -- the system profile -------------------------------------------------------------------------


def build_profile(generation: Generation) -> None:
    """Populate the generation's `sw/bin` with the commands a NixOS system has, and the lab's store."""
    build_store()
    bin_dir = generation.directory / "sw" / "bin"
    if bin_dir.is_dir():
        return
    bin_dir.mkdir(parents=True)
    for command in [*PROFILE_COMMANDS, "tailscale", *LAB_COMMANDS]:
        _link_command(bin_dir, command)


def build_store() -> None:
    """Give every package of the `pkgs` stand-in its own `bin` with the commands it has (packages.json).

    A unit's PATH names these directories, so a unit finds only the commands of the packages in its `path`.
    """
    packages: dict[str, dict[str, Any]] = json.loads(PACKAGES_FILE.read_text())
    store = host_path(STORE_DIR)
    for name, package in packages.items():
        directory = store / f"{name}-{package['version']}"
        if directory.is_dir():
            continue
        staging = store / f".{directory.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        for command in package.get("bin") or []:
            _link_command(staging / "bin", command)
        os.replace(staging, directory)


def _link_command(bin_dir: Path, command: str) -> None:
    """Put one command into a `bin` directory: the lab's own emulators, or this machine's program."""
    if command == "tailscale":
        os.symlink(host_path(TAILSCALE_CLI), bin_dir / command)
        return
    if command in LAB_COMMANDS:
        module, args = LAB_COMMANDS[command]
        pylib = Path(units.__file__).resolve().parents[2]  # the directory holding tailnix_lab (and tailnix)
        wrapper = bin_dir / command
        wrapper.write_text(
            f'#!/bin/sh\nPYTHONPATH={pylib} exec /usr/bin/python3 -m tailnix_lab.emulator.{module} {args}"$@"\n'
        )
        wrapper.chmod(0o755)
        return
    found = shutil.which(command, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    if found:
        os.symlink(found, bin_dir / command)


# -- sops-nix -------------------------------------------------------------------------------------


class SecretsError(Exception):
    """sops-install-secrets could not install the secrets."""


def sops_binary() -> str:
    """The host's real sops."""
    return os.environ.get(SOPS_ENV) or SOPS_BINARY


def config_path_on_host(path: str) -> Path:
    """A path from the configuration: Nix resolved path literals already, strings are host paths.

    Store paths (a flake's files are evaluated from the store) are the machine's: every lab host
    shares its Nix store.
    """
    root = str(host_root())
    if root == "/" or path.startswith((root.rstrip("/") + "/", "/nix/store/")):
        return Path(path)
    return host_path(path)


def age_identities(sops: dict[str, Any]) -> list[str]:
    """The age identities sops-install-secrets would import: SSH host keys and age.keyFile."""
    identities = []
    age = sops.get("age") or {}
    for key_path in age.get("sshKeyPaths") or []:
        try:
            text = config_path_on_host(key_path).read_text()
        except OSError as err:
            raise SecretsError(f"cannot read ssh key '{key_path}': {err.strerror}") from err
        identity = ssh_private_key_to_age_identity(text)
        identities.append(identity)
        say(f"sops-install-secrets: Imported {key_path} as age key")
    key_file = age.get("keyFile")
    if key_file:
        try:
            text = config_path_on_host(key_file).read_text()
        except OSError as err:
            raise SecretsError(f"cannot read keyfile '{key_file}': {err.strerror}") from err
        identities.extend(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return identities


def decrypt(sops_file: str, file_format: str, output_format: str, identities: list[str]) -> str:
    """Decrypt a sops file with the real sops; the key goes through the environment, never argv."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/var/empty",
        "SOPS_AGE_KEY": "\n".join(identities),
    }
    command = [
        sops_binary(),
        "--disable-version-check",
        "--decrypt",
        "--input-type",
        file_format,
        "--output-type",
        output_format,
        str(config_path_on_host(sops_file)),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SecretsError(f"failed to decrypt '{sops_file}': {done.stderr.strip()}")
    return done.stdout


def secret_value(name: str, secret: dict[str, Any], identities: list[str]) -> bytes:
    """The plaintext of one `sops.secrets.<name>`, as sops-install-secrets' `decryptSecret` makes it.

    binary, dotenv and ini secrets are the whole decrypted file (`key` is not used); yaml and json
    ones the string at `key` ("" for the whole file).
    """
    file_format = str(secret.get("format") or "yaml")
    sops_file = str(secret["sopsFile"])
    key = str(secret.get("key") if secret.get("key") is not None else name)
    if file_format in ("binary", "dotenv", "ini") or key == "":
        return decrypt(sops_file, file_format, file_format, identities).encode()
    data: Any = json.loads(decrypt(sops_file, file_format, "json", identities))
    problem = secret_key_problem(data, key)
    if problem:
        raise SecretsError(f"secret {secret.get('name') or name} in {sops_file} is not valid: {problem}")
    for part in key.split("/"):
        data = data[part]
    return str(data).encode()


def secret_key_problem(data: Any, wanted: str) -> str | None:
    """sops-install-secrets' recurseSecretKey: why `wanted` names no string in `data`, in its words.

    The tool names the value of a top-level key '' (it names only the keys above the last).
    """
    parts = wanted.split("/")
    so_far: list[str] = []
    for index, part in enumerate(parts):
        if not isinstance(data, dict) or part not in data:
            return f"the key '{'/'.join([*so_far, part])}' cannot be found"
        if index < len(parts) - 1:
            so_far.append(part)
            if not isinstance(data[part], dict):
                return f"key '{'/'.join(so_far)}' does not refer to a dictionary"
        data = data[part]
    if not isinstance(data, str):
        return f"the value of key '{'/'.join(so_far)}' is not a string"
    return None


def install_secrets(sops: dict[str, Any]) -> set[str]:
    """Decrypt every secret into a new `/run/secrets.d/N` and point `/run/secrets` at it.

    Returns the names of the secrets whose content changed (added, modified): the ones whose
    `restartUnits` go to the activation restart list. When `/run/secrets` did not exist before (as at
    boot) the set is empty: sops-install-secrets then lists no changes (main.go `handleModifications`).
    """
    secrets = {name: s for name, s in (sops.get("secrets") or {}).items() if not s.get("neededForUsers")}
    if not secrets:
        return set()
    identities = age_identities(sops)
    values = {name: secret_value(name, secret, identities) for name, secret in secrets.items()}

    first_activation = not host_path(SECRETS_LINK).exists()
    mount = host_path(SECRETS_MOUNT)
    mount.mkdir(parents=True, exist_ok=True)
    mount.chmod(0o751)
    numbers = sorted(int(p.name) for p in mount.iterdir() if p.name.isdigit())
    previous = mount / str(numbers[-1]) if numbers else None
    current = mount / str(numbers[-1] + 1 if numbers else 1)
    current.mkdir(mode=0o751)
    changed: set[str] = set()
    for name, secret in secrets.items():
        target = current / str(secret.get("name") or name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(values[name])
        os.chown(target, _uid(secret), _gid(secret))
        os.chmod(target, int(str(secret.get("mode") or "0400"), 8))
        old = previous / str(secret.get("name") or name) if previous else None
        if first_activation:
            continue
        if old is None or not old.exists():
            changed.add(name)
            say(f"adding secret: {name}")
        elif old.read_bytes() != values[name]:
            changed.add(name)
            say(f"modifying secret: {name}")
    if previous is not None:
        for old_file in previous.rglob("*"):
            if old_file.is_file() and not (current / old_file.relative_to(previous)).exists():
                say(f"removing secret: {old_file.relative_to(previous)}")
    _replace_symlink(host_path(SECRETS_LINK), str(host_path(str(Path(SECRETS_MOUNT) / current.name))))
    for name, secret in secrets.items():
        path = str(secret.get("path") or f"{SECRETS_LINK}/{name}")
        if path != f"{SECRETS_LINK}/{secret.get('name') or name}":
            _replace_symlink(host_path(path), str(host_path(f"{SECRETS_LINK}/{secret.get('name') or name}")))
    keep = int(sops.get("keepGenerations", 1))
    if keep > 0:
        for number in numbers[: max(0, len(numbers) + 1 - keep)]:
            shutil.rmtree(mount / str(number), ignore_errors=True)
    return changed


def _uid(secret: dict[str, Any]) -> int:
    owner = secret.get("owner")
    if owner is None:
        return int(secret.get("uid") or 0)
    try:
        return pwd.getpwnam(str(owner)).pw_uid
    except KeyError as err:
        raise SecretsError(f"failed to lookup user '{owner}': user: unknown user {owner}") from err


def _gid(secret: dict[str, Any]) -> int:
    group = secret.get("group")
    if group is None:
        return int(secret.get("gid") or 0)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError as err:
        raise SecretsError(f"failed to lookup group '{group}': group: unknown group {group}") from err


# -- units ------------------------------------------------------------------------------------------


@dataclass
class UnitPlan:
    """What switch-to-configuration will do to units."""

    stop: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    not_restarted: list[str] = field(default_factory=list)


def configured_units(configuration: dict[str, Any]) -> dict[str, units.ServiceUnit]:
    """The enabled services of a configuration, by unit name."""
    services = ((configuration.get("systemd") or {}).get("services")) or {}
    found = {}
    for name, definition in services.items():
        if definition.get("enable", True):
            service = units.ServiceUnit(name=name, definition=definition)
            found[service.unit] = service
    return found


def plan_units(new: dict[str, units.ServiceUnit], restart_list: list[str]) -> UnitPlan:
    """Decide which units stop, restart and start, comparing with what is installed and running.

    `restart_list` is /run/nixos/activation-restart-list: unit names as the activation wrote them
    (sops-nix's `restartUnits`). As switch-to-configuration-ng does, one that is not active is
    started, whatever its name; an active one is restarted unless `restartIfChanged = false`.
    """
    plan = UnitPlan()
    for unit in units.installed_units():
        if unit not in new and units.read_state(unit).get("ActiveState") in (units.ACTIVE, units.ACTIVATING):
            plan.stop.append(unit)
    wanted: list[str] = []
    for unit, service in sorted(new.items()):
        old = units.load_definition(unit)
        state = units.read_state(unit)
        active = state.get("ActiveState") in (units.ACTIVE, units.ACTIVATING)
        changed = old is not None and old.definition_hash != service.definition_hash
        if active and (changed or unit in restart_list):
            if service.definition.get("restartIfChanged", True):
                plan.restart.append(unit)
            else:
                plan.not_restarted.append(unit)
            continue
        ran_this_definition = (
            state.get("Hash") == service.definition_hash and state.get("Result") == "success"
        )
        if service.wanted_by_multi_user and not active and not ran_this_definition:
            wanted.append(unit)
    for unit in restart_list:
        planned = unit in wanted or unit in plan.restart or unit in plan.not_restarted
        if not planned and units.read_state(unit).get("ActiveState") not in (units.ACTIVE, units.ACTIVATING):
            wanted.append(unit)
    # Wants=/Requires= pull in the units they name.
    queue = [unit for unit in wanted if unit in new]
    while queue:
        unit = queue.pop()
        for dependency in (
            new[unit].list_of("wants") + new[unit].list_of("requires") + new[unit].list_of("bindsTo")
        ):
            if dependency in new and dependency not in wanted and dependency not in plan.restart:
                state = units.read_state(dependency)
                if state.get("ActiveState") not in (units.ACTIVE, units.ACTIVATING):
                    wanted.append(dependency)
                    queue.append(dependency)
    plan.start = wanted
    return plan


def start_order(selected: list[str], configured: dict[str, units.ServiceUnit]) -> list[str]:
    """Order units by their After=/Before= relations among the selected ones (stable otherwise)."""
    after: dict[str, set[str]] = {u: set() for u in selected}
    for unit in selected:
        for other in configured[unit].list_of("after"):
            if other in after:
                after[unit].add(other)
        for other in configured[unit].list_of("before"):
            if other in after:
                after[other].add(unit)
    ordered: list[str] = []
    pending = sorted(selected)
    while pending:
        ready = [u for u in pending if not (after[u] - set(ordered))]
        # An ordering cycle: systemd breaks it by dropping a job; take the first unit.
        chosen = ready[0] if ready else pending[0]
        ordered.append(chosen)
        pending.remove(chosen)
    return ordered


def note_missing_orderings(
    unit: str, service: units.ServiceUnit, configured: dict[str, units.ServiceUnit]
) -> None:
    """An After= on a unit that does not exist orders against nothing: legal, but worth a line."""
    for other in service.list_of("after") + service.list_of("before"):
        if other.endswith(".service") and other not in configured:
            units.systemd_log(
                unit, f"{unit}: ordering dependency on {other}, which does not exist; ignoring."
            )


def run_units(plan: UnitPlan, configured: dict[str, units.ServiceUnit], refused: list[str]) -> list[str]:
    """Carry out a unit plan; return the units whose jobs failed (`refused` gets the jobs systemd refused)."""
    failed: list[str] = []
    if plan.stop:
        say("stopping the following units: " + ", ".join(sorted(plan.stop)))
        for unit in plan.stop:
            units.stop(unit)
    for unit in units.installed_units():
        if unit not in configured:
            units.remove_definition(unit)
    for service in configured.values():
        units.save_definition(service)
    # switch-to-configuration forgets previously failed units before it starts anything.
    units.reset_failed()
    if plan.not_restarted:
        say("NOT restarting the following changed units: " + ", ".join(sorted(plan.not_restarted)))
    if plan.restart:
        say("restarting the following units: " + ", ".join(sorted(plan.restart)))
        for unit in start_order(plan.restart, configured):
            note_missing_orderings(unit, configured[unit], configured)
            if units.restart(unit) == units.FAILED:
                failed.append(unit)
    if plan.start:
        unknown = [unit for unit in plan.start if unit not in configured]
        known = [unit for unit in plan.start if unit in configured]
        for unit in unknown:
            # systemd refuses the start job (the D-Bus call fails) for a name it cannot load.
            if VALID_UNIT_NAME.fullmatch(unit):
                say(f"Failed to start {unit}: Unit {unit} not found.")
            else:
                say(f"Failed to start {unit}: Unit name {unit} is not valid.")
            refused.append(unit)
        if known:
            say("the following new units were started: " + ", ".join(sorted(known)))
        for unit in start_order(known, configured):
            service = configured[unit]
            note_missing_orderings(unit, service, configured)
            broken = [d for d in service.list_of("requires") + service.list_of("bindsTo") if d in failed]
            if broken:
                units.systemd_log(unit, f"Dependency failed for {service.description}.")
                units.systemd_log(unit, f"{unit}: Job {unit}/start failed with result 'dependency'.")
                units.write_state(
                    unit,
                    ActiveState=units.FAILED,
                    SubState="failed",
                    Result="dependency",
                    Hash=service.definition_hash,
                )
                failed.append(unit)
                continue
            if units.start(unit) == units.FAILED:
                failed.append(unit)
    return failed


def run_activation_script(generation: Generation, configuration: dict[str, Any]) -> tuple[set[str], int]:
    """The generation's activation script: the system profile, /run/current-system, sops-nix's secrets.

    switch-to-configuration runs it before it handles units, and so does stage 2 of a boot, before systemd
    starts. Returns the secrets that changed and the status (0, or ACTIVATION_FAILED when sops-nix failed).
    """
    build_profile(generation)
    _replace_symlink(host_path(CURRENT_SYSTEM), str(host_path(generation.host_path)))
    say("setting up /etc...")
    sops = configuration.get("sops")
    if sops is None:
        return set(), 0
    if not host_path(SECRETS_LINK).exists() and sops.get("secrets"):
        say("setting up secrets...")
    try:
        return install_secrets(sops), 0
    except SecretsError as err:
        say(f"sops-install-secrets: {err}")
        say("Activation script snippet 'setupSecrets' failed (1)")
        return set(), ACTIVATION_FAILED


def switch_to_configuration(generation: Generation, action: str) -> int:
    """Make a generation the running (`switch`, `test`) and/or boot (`switch`, `boot`) system."""
    if action in ("switch", "boot"):
        set_default(generation)
    if action == "boot":
        return 0
    configuration = generation.configuration()["config"]
    say("activating the configuration...")
    changed_secrets, status = run_activation_script(generation, configuration)
    configured = configured_units(configuration)
    # What sops-install-secrets writes to /run/nixos/activation-restart-list: the names as given.
    restart_list: list[str] = []
    for name in sorted(changed_secrets):
        for unit in (configuration.get("sops") or {}).get("secrets", {}).get(name, {}).get(
            "restartUnits"
        ) or []:
            if str(unit) not in restart_list:
                restart_list.append(str(unit))
    plan = plan_units(configured, restart_list)
    refused: list[str] = []
    run_units(plan, configured, refused)
    # Every unit failed at the end counts, also one that had failed before and failed again.
    failed = units.failed_units()
    if failed:
        say("warning: the following units failed: " + ", ".join(sorted(failed)))
        for unit in sorted(failed):
            say("")
            say(systemctl.status_text(unit, lines=10))
    if failed or refused:
        status = UNITS_FAILED
    return status
