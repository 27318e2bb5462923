"""The fleet: who is in it (the inventory's hosts and groups) and where its secrets live."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra.api.state import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from tailnix.settings import DEFAULT_SECRET_NAME, DEFAULT_SECRETS_FILE, SettingsError, parse_settings

SOPS_CONFIG_NAME = ".sops.yaml"


class FleetError(ValueError):
    """Something the user can fix: a bad inventory, an unknown host, a `.sops.yaml` tailnix cannot edit."""


class UnknownHostsError(FleetError):
    """Hosts or groups named on the command line that the inventory does not have: a usage error."""


@dataclass(frozen=True)
class FleetHost:
    """One inventory host: its name, the groups it is in, and its merged data."""

    name: str
    groups: tuple[str, ...]
    data: Mapping[str, Any]


def inventory_directory(inventory_file: Path) -> Path:
    """The fleet's directory: the inventory's. Its relative paths (the secrets file, SSH keys, known hosts)
    start there, and pyinfra runs there for the fleet commands, whatever the current directory is."""
    return inventory_file.absolute().parent.resolve()


def load_fleet(inventory_file: Path) -> list[FleetHost]:
    """Every host of a pyinfra inventory file, with group_data applied, in inventory order.

    The group_data read is the one a pyinfra run in the inventory's directory reads (`group_data/` there).
    """
    if not inventory_file.is_file():
        raise FleetError(f"inventory {inventory_file} does not exist")
    try:
        with ctx_state.use(State()):
            inventory = make_inventory(
                str(inventory_file.absolute()), cwd=str(inventory_directory(inventory_file))
            )
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
        raise UnknownHostsError(f"not in the inventory: {', '.join(unknown)} (hosts: {listed})")
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
    base_dir: Path,
    secrets_file: Path | None = None,
    sops_config: Path | None = None,
) -> SecretsLocation:
    """Where the hosts' secrets are: from their settings, unless given; all hosts must share one file.

    + base_dir: the fleet's directory (`inventory_directory`), where a relative setting starts; a path
      given on the command line starts in the current directory, as any command's argument does
    """
    files: dict[Path, list[str]] = {}
    names: set[str] = set()
    for host in hosts:
        try:
            settings = parse_settings(host.name, host.data, base_dir=base_dir)
        except SettingsError as error:
            raise FleetError(str(error)) from None
        files.setdefault(settings.secrets_file, []).append(host.name)
        names.add(settings.secret_name)
    if secrets_file is None:
        if len(files) > 1:
            shown = "; ".join(f"{path} ({', '.join(members)})" for path, members in files.items())
            raise FleetError(f"the hosts use different secrets files: {shown}; name one with --secrets-file")
        secrets_file = next(iter(files), base_dir / DEFAULT_SECRETS_FILE)
    if len(names) > 1:
        raise FleetError(f"the hosts use different secret names: {', '.join(sorted(names))}")
    secret_name = next(iter(names), DEFAULT_SECRET_NAME)
    config = sops_config if sops_config is not None else find_sops_config(secrets_file)
    return SecretsLocation(secrets_file.absolute(), config.absolute(), secret_name)
