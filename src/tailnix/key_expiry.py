"""`tailscale_key_expiry = False`: disable the node key expiry of a host's device through the Tailscale API.

This runs in the `tailnix` process on the workstation once the deploy has ended, not as an operation of
the playbook: the OAuth client secret and its access token stay in this process's memory and never travel
to a host or into pyinfra's operations, and the call changes the tailnet, not the host. A host is read
first (`Self.ID`, and whether `Self.KeyExpiry` is still there), so a device whose expiry is already off
costs no API call and needs no client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailnix import mint
from tailnix.fleet import FleetHost
from tailnix.runner import read_fact
from tailnix.settings import SettingsError, parse_settings
from tailnix.status import FLEET_STATUS_FACT

SCOPE = "devices:core"
KEY_EXPIRY_CHANGE = "disable its node key expiry through the Tailscale API (tailscale_key_expiry = False)"


@dataclass(frozen=True)
class KeyExpiryResult:
    """What became of one host's `tailscale_key_expiry = False`."""

    host: str
    ok: bool
    message: str


def wants_no_expiry(host: FleetHost) -> bool:
    """Whether the host's settings turn its node key expiry off."""
    try:
        return not parse_settings(host.name, host.data).key_expiry
    except SettingsError:
        return False  # the deploy has refused the host already


@dataclass(frozen=True)
class ExpiringDevices:
    """The hosts that want no node key expiry, as read: still expiring (host -> `Self.ID`), or unread."""

    expiring: dict[str, str]
    unread: dict[str, str]
    """host -> why its node could not be read (not Running, unreachable)."""


def read_expiring_devices(inventory_file: Path, hosts: list[FleetHost]) -> ExpiringDevices:
    """Read each host that wants its node key expiry off: is it still on, and what is the device's id."""
    wanted = [host for host in hosts if wants_no_expiry(host)]
    if not wanted:
        return ExpiringDevices({}, {})
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, wanted)
    expiring: dict[str, str] = {}
    unread: dict[str, str] = {}
    for host in wanted:
        status = (reading.values.get(host.name) or {}).get("tailscale") or {}
        own = status.get("Self") or {}
        if status.get("BackendState") != "Running" or not own.get("ID"):
            unread[host.name] = (
                reading.errors.get(host.name) or reading.refused.get(host.name) or "its node is not Running"
            )
        elif own.get("KeyExpiry"):
            expiring[host.name] = str(own["ID"])
    return ExpiringDevices(expiring, unread)


def disable_node_key_expiry(
    inventory_file: Path,
    hosts: list[FleetHost],
    *,
    find_client: Callable[[], mint.OAuthClient | None],
    base_url: str,
) -> list[KeyExpiryResult]:
    """Disable the node key expiry of each host that wants it off and still has it; one result per call.

    + find_client: the OAuth client (from the environment or --oauth-file), None when there is none
    + base_url: the Tailscale API
    """
    devices = read_expiring_devices(inventory_file, hosts)
    results = [
        KeyExpiryResult(
            name, False, f"tailscale_key_expiry = False, but its node could not be read: {reason}"
        )
        for name, reason in devices.unread.items()
    ]
    pending = devices.expiring
    if not pending:
        return results
    try:
        client = find_client()
        if client is None:
            raise mint.MintError(
                f"set ${mint.CLIENT_ID_ENV} and ${mint.CLIENT_SECRET_ENV} (an OAuth client with the {SCOPE} "
                "scope), or give --oauth-file"
            )
        api = mint.check_base_url(base_url)
        token = mint.access_token(api, client)
    except mint.MintError as error:
        needed = f"tailscale_key_expiry = False, but its node key still expires: disabling that needs the Tailscale API: {error}"
        return results + [KeyExpiryResult(name, False, needed) for name in pending]
    for name, device_id in pending.items():
        try:
            mint.disable_key_expiry(api, token, device_id)
        except mint.MintError as error:
            results.append(KeyExpiryResult(name, False, f"tailscale_key_expiry = False: {error}"))
        else:
            results.append(
                KeyExpiryResult(name, True, f"node key expiry disabled through {api} (device {device_id})")
            )
    return results
