"""The fleet: who is in it (the inventory's hosts and groups) and where its secrets live."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra.api.inventory import Inventory
from pyinfra.api.state import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from tailnix.settings import (
    ADMIN_COPY_NAME,
    DEFAULT_SECRET_NAME,
    DEFAULT_SECRETS_FILE,
    HOST_PLACEHOLDER,
    SettingsError,
    TailscaleSettings,
    host_file,
    parse_settings,
)

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


def _inventory(inventory_file: Path) -> Inventory:
    if not inventory_file.is_file():
        raise FleetError(f"inventory {inventory_file} does not exist")
    try:
        with ctx_state.use(State()):
            inventory: Inventory = make_inventory(
                str(inventory_file.absolute()), cwd=str(inventory_directory(inventory_file))
            )
            return inventory
    except Exception as error:  # pyinfra raises many kinds for a broken inventory file
        raise FleetError(f"cannot load inventory {inventory_file}: {error}") from None


def fleet_data(inventory_file: Path) -> dict[str, Any]:
    """The fleet-wide data (`group_data/all.py`), which a fleet without hosts yet has too."""
    return dict(_inventory(inventory_file).get_data())  # type: ignore[no-untyped-call]


def load_fleet(inventory_file: Path) -> list[FleetHost]:
    """Every host of a pyinfra inventory file, with group_data applied, in inventory order.

    The group_data read is the one a pyinfra run in the inventory's directory reads (`group_data/` there).
    """
    return [
        FleetHost(host.name, tuple(sorted(str(group) for group in host.groups)), dict(host.data.dict()))  # type: ignore[no-untyped-call]
        for host in _inventory(inventory_file)
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
    for settings in _settings(hosts, base_dir):
        files.setdefault(settings.secrets_file, []).append(settings.host)
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


def _settings(hosts: list[FleetHost], base_dir: Path) -> list[TailscaleSettings]:
    try:
        return [parse_settings(host.name, host.data, base_dir=base_dir) for host in hosts]
    except SettingsError as error:
        raise FleetError(str(error)) from None


@dataclass(frozen=True)
class PerHostSecrets:
    """One secrets file per host, from a template (`secrets/hosts/{host}.yaml`), each encrypted for the
    admins and that host alone; and the admins' own copy of the key (`secrets/hosts/admins.yaml`), from
    which hosts bootstrapped later get theirs."""

    template: Path
    sops_config: Path
    secret_name: str

    def file_of(self, host: str) -> Path:
        """The host's own file."""
        return host_file(self.template, host)

    def location_of(self, host: str) -> SecretsLocation:
        """The host's own file as a location the shared layout's functions take."""
        return SecretsLocation(self.file_of(host), self.sops_config, self.secret_name)

    @property
    def admin_copy(self) -> SecretsLocation:
        """The admins' own copy of the key."""
        return self.location_of(ADMIN_COPY_NAME)

    def relative(self, path: Path) -> str:
        """`path` as sops matches a `path_regex` against it: relative to the directory of `.sops.yaml`."""
        try:
            return path.resolve().relative_to(self.sops_config.resolve().parent).as_posix()
        except ValueError:
            raise FleetError(
                f"{path} is not under {self.sops_config.parent}, where sops matches path_regex"
            ) from None


SecretsLayout = SecretsLocation | PerHostSecrets


def secrets_layout(
    hosts: list[FleetHost],
    *,
    base_dir: Path,
    fleet_wide: Mapping[str, Any] | None = None,
    secrets_file: Path | None = None,
    sops_config: Path | None = None,
) -> SecretsLayout:
    """The fleet's secrets: one file per host when `tailnix_secrets_file` has `{host}`, else the shared one.

    + fleet_wide: the fleet-wide data, which decides for a fleet without hosts yet
    + secrets_file: a file named on the command line: the shared layout, for that file
    """
    if secrets_file is not None:
        return secrets_location(hosts, base_dir=base_dir, secrets_file=secrets_file, sops_config=sops_config)
    chosen = (
        _settings(hosts, base_dir) if hosts else _settings([FleetHost("all", (), fleet_wide or {})], base_dir)
    )
    templates = {settings.secrets_template for settings in chosen}
    if templates == {None}:
        return secrets_location(hosts, base_dir=base_dir, sops_config=sops_config)
    if len(templates) > 1:
        shown = "; ".join(
            f"{settings.host}: {settings.secrets_template or settings.secrets_file}" for settings in chosen
        )
        raise FleetError(
            f"the hosts do not share one tailnix_secrets_file (a {HOST_PLACEHOLDER} template, or one file): "
            f"{shown}; set it once, in group_data/all.py"
        )
    template = next(iter(templates))
    assert template is not None
    names = {settings.secret_name for settings in chosen}
    if len(names) > 1:
        raise FleetError(f"the hosts use different secret names: {', '.join(sorted(names))}")
    config = sops_config if sops_config is not None else find_sops_config(template)
    return PerHostSecrets(template.absolute(), config.absolute(), names.pop())
