"""`tailnix_replace_offline_device`: a reinstalled host gets its name back instead of `desk-1`.

A host reinstalled, or whose /var/lib/tailscale was lost, logs in as a new device; while its old device is
still on the tailnet, control names the new one `desk-1` (tailscale/tailscale #4778; headscale v0.29.2 does
the same, `hscontrol/state/node_store.go` `resolveGivenName`). Before the deploy, for each host whose node is
not logged in (NeedsLogin), the offline devices of its host name are deleted: through the Tailscale API, or on
a headscale fleet with `headscale nodes delete` over SSH on its headscale host. This runs in the `tailnix`
process (the OAuth client never reaches a host), before the join, and deletes only a device that is not
connected to control and that `tailnix-nodes.json` does not record as another inventory host's node: a
running machine, or another fleet host that is off, that happens to share the name is left alone, and verify
names the `-1` the node then gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailnix import headscale, mint
from tailnix.devices import DeviceDirectory, TailnetDevices
from tailnix.fleet import FleetHost, inventory_directory, load_fleet
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


def _directories(
    inventory_file: Path,
    wanted: list[FleetHost],
    find_client: Callable[[], mint.OAuthClient | None],
    base_url: str,
) -> dict[str, DeviceDirectory]:
    """Where each host's old device would be deleted: its headscale server's nodes, or the Tailscale API with
    a client. A host with neither (no client; a login server that is not a known headscale one) is left out."""
    found: dict[str, DeviceDirectory] = {}
    fleet: list[FleetHost] | None = None
    api: TailnetDevices | None = None
    for host in wanted:
        if host.data.get(headscale.LOGIN_SERVER):
            fleet = fleet if fleet is not None else load_fleet(inventory_file)
            try:
                nodes = headscale.headscale_nodes(inventory_file, host, fleet)
            except mint.MintError:
                continue  # a login server of its own: verify names the `-1` if the node gets one
            if nodes is not None:
                found[host.name] = nodes
            continue
        if api is None:
            try:
                client = find_client()
            except mint.MintError:
                client = None  # said by the steps that need the client after the deploy
            if client is None:
                continue
            api = TailnetDevices(base_url, client)
        found[host.name] = api
    return found


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

    A host on a headscale server (`tailscale_login_server` and `tailnix_headscale_host`) has its old node
    deleted there over SSH (`headscale nodes delete`); any other through the Tailscale API. Without a client
    nothing is read or asked for the latter; the hosts that have somewhere to delete are read once more (one
    round trip).
    """
    wanted = [host for host in hosts if _replaces(host)]
    directories = _directories(inventory_file, wanted, find_client, base_url) if wanted else {}
    if not directories:
        return []
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, [h for h in wanted if h.name in directories])
    joining: dict[str, str] = {}
    for host in wanted:
        status = (reading.values.get(host.name) or {}).get("tailscale") or {}
        if host.name in directories and status.get("BackendState") == "NeedsLogin":
            joining[host.name] = _hostname(host, status.get("Self") or {})
    if not joining:
        return []
    try:
        records = read_records(inventory_directory(inventory_file))
    except NodeRecordError:
        records = {}  # said after the deploy, by the route approvals
    results = []
    for joiner, name in joining.items():
        directory = directories[joiner]
        how = directory.via or " through the Tailscale API"
        try:
            for device in directory.named(name):
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
                    directory.delete(device)
                done = "delete" if dry else "deleted"
                results.append(
                    Replacement(
                        joiner,
                        True,
                        f"{done} the offline device {device.name} ({device.device_id}){how}, so that the node "
                        f"joins as {name}",
                    )
                )
        except mint.MintError as error:
            results.append(Replacement(joiner, False, f"its old device could not be replaced: {error}"))
    return results
