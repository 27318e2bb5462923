"""Hosts as sops recipients: their SSH host keys, converted to age, recorded in `.sops.yaml`.

`bootstrap` adds a host's recipient and re-encrypts the secrets file for it; `forget` removes it and gives
the file a new data key.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.facts import FactBase

from tailnix import paths
from tailnix.agekey import KeyFormatError, ssh_public_key_to_age
from tailnix.fleet import FleetError, FleetHost, SecretsLocation
from tailnix.runner import read_fact
from tailnix.secrets_file import missing_file, read_sealed
from tailnix.sops import NotEncryptedError, SopsError, read_metadata, rotate_data_key, update_keys
from tailnix.sops_config import SopsConfig, SopsConfigError, write_config

HOST_KEY_FACT = "tailnix.recipients.HostKey"


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
    files_written: list[Path] = field(default_factory=list)
    """With one file per host: the hosts' files written."""
    files_deleted: list[Path] = field(default_factory=list)


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


def read_recipients(inventory_file: Path, hosts: list[FleetHost], update: RecipientUpdate) -> dict[str, str]:
    """Each host's age recipient, read from its SSH host key in one pyinfra run, in inventory order.

    A host that cannot be read, or is not NixOS, gets a failed change in `update` and no recipient.
    """
    reading = read_fact(inventory_file, HOST_KEY_FACT, hosts)
    recipients = {}
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
            recipients[host.name] = _recipient_of(host.name, reading.values[host.name])
        except FleetError as error:
            update.changes.append(RecipientChange(host.name, "failed", str(error)))
    return recipients


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
    update = RecipientUpdate()
    text = config.text
    for host, recipient in read_recipients(inventory_file, hosts, update).items():
        current = SopsConfig(text, config.secrets_path)
        recorded = current.named(host)
        listed = [r for r in current.recipients() if r.recipient == recipient]
        if recorded == recipient and any(r.name == host for r in listed):
            update.changes.append(RecipientChange(host, "unchanged", "already a recipient", recipient))
            continue
        if recorded is None and listed:
            name = listed[0].name
            shown = f"as &{name}" if name else "unnamed"
            update.changes.append(
                RecipientChange(host, "unchanged", f"already a recipient ({shown})", recipient)
            )
            continue
        refused = key_changed(host, recorded, recipient, replace_key=replace_key)
        if refused is not None:
            update.changes.append(refused)
            continue
        try:
            text = current.with_recipient(host, recipient)
        except SopsConfigError as error:
            update.changes.append(RecipientChange(host, "failed", str(error)))
            continue
        update.changes.append(recorded_change(host, recorded, recipient))
    in_order(update, hosts)
    update.config_changed = text != config.text
    _apply(location, config, text, update)
    return update


def in_order(update: RecipientUpdate, hosts: list[FleetHost]) -> None:
    """Put the changes in the order of `hosts` (read failures are found before the rest)."""
    order = {host.name: index for index, host in enumerate(hosts)}
    update.changes.sort(key=lambda change: order.get(change.host, len(order)))


def key_changed(
    host: str, recorded: str | None, recipient: str, *, replace_key: bool
) -> RecipientChange | None:
    """The refusal of a host whose key is not the one recorded under its name, unless `replace_key`."""
    if recorded is None or recorded == recipient or replace_key:
        return None
    return RecipientChange(
        host,
        "failed",
        f"its SSH host key changed: it is {recipient} but .sops.yaml records {recorded}; "
        "if the machine was reinstalled, run again with --replace-key",
        recipient,
    )


def recorded_change(host: str, recorded: str | None, recipient: str) -> RecipientChange:
    """A host's recipient added, or put in place of the one recorded under its name."""
    outcome = "replaced" if recorded is not None else "added"
    return RecipientChange(host, outcome, f"recipient {outcome}", recipient)


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
        raise FleetError(missing_file(location.secrets_file))
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
