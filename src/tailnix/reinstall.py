"""`tailnix_replace_offline_device`: a reinstalled host gets its name back instead of `desk-1`.

A host reinstalled, or whose /var/lib/tailscale was lost, logs in as a new device; while its old device is
still on the tailnet, control names the new one `desk-1` (tailscale/tailscale #4778). Before the deploy,
for each host whose node is not logged in (NeedsLogin), the offline devices of its host name are deleted
through the Tailscale API. This runs in the `tailnix` process (the OAuth client never reaches a host),
before the join, and deletes only a device that is not connected to control and that `tailnix-nodes.json`
does not record as another inventory host's node: a running machine, or another fleet host that is off,
that happens to share the name is left alone, and verify names the `-1` the node then gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailnix import mint
from tailnix.devices import TailnetDevices
from tailnix.fleet import FleetHost, inventory_directory
from tailnix.node_records import RECORD_FILE, NodeRecordError, read_records
from tailnix.runner import read_fact
from tailnix.settings import SettingsError, parse_settings
from tailnix.status import FLEET_STATUS_FACT


@dataclass(frozen=True)
class Replacement:
    """What became of one host's old device."""

    host: str
    ok: bool
    message: str


def _replaces(host: FleetHost) -> bool:
    try:
        return parse_settings(host.name, host.data).replace_offline_device
    except SettingsError:
        return False  # the deploy refuses the host


def _hostname(host: FleetHost, own: dict[str, object]) -> str:
    try:
        wanted = parse_settings(host.name, host.data).hostname
    except SettingsError:
        wanted = None
    return wanted or str(own.get("HostName") or host.name)


def replace_offline_devices(
    inventory_file: Path,
    hosts: list[FleetHost],
    *,
    find_client: Callable[[], mint.OAuthClient | None],
    base_url: str,
    dry: bool = False,
) -> list[Replacement]:
    """Delete the offline devices that hold the names of hosts about to join; one result per deletion.

    + dry: only list them (the API is read, nothing is deleted); each result then says what would be done

    Without a client nothing is read or asked; with one, the hosts are read once more (one round trip).
    """
    wanted = [host for host in hosts if _replaces(host)]
    # Without a client nothing can be deleted, and the hosts are not read (verify names the `-1`).
    try:
        client = find_client() if wanted else None
    except mint.MintError:
        client = None  # said by the steps that need the client after the deploy
    if client is None:
        return []
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, wanted)
    joining: dict[str, str] = {}
    for host in wanted:
        status = (reading.values.get(host.name) or {}).get("tailscale") or {}
        if status.get("BackendState") == "NeedsLogin":
            joining[host.name] = _hostname(host, status.get("Self") or {})
    if not joining:
        return []
    try:
        records = read_records(inventory_directory(inventory_file))
    except NodeRecordError:
        records = {}  # said after the deploy, by the route approvals
    devices = TailnetDevices(base_url, client)
    results = []
    for joiner, name in joining.items():
        try:
            for device in devices.named(name):
                if device.online:
                    continue
                owner = next(
                    (h for h, r in records.items() if h != joiner and r.node_id == device.device_id), None
                )
                if owner is not None:
                    results.append(
                        Replacement(
                            joiner,
                            True,
                            f"the offline device {device.name} ({device.device_id}) holds {name}, but it is "
                            f"{owner}'s node ({RECORD_FILE}): left alone",
                        )
                    )
                    continue
                if not dry:
                    devices.delete(device)
                done = "delete" if dry else "deleted"
                results.append(
                    Replacement(
                        joiner,
                        True,
                        f"{done} the offline device {device.name} ({device.device_id}) through the Tailscale "
                        f"API, so that the node joins as {name}",
                    )
                )
        except mint.MintError as error:
            results.append(Replacement(joiner, False, f"its old device could not be replaced: {error}"))
    return results
