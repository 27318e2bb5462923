"""Advertised routes and exit nodes: approved through the Tailscale API, then seen from another fleet host.

A route a node advertises (`tailscale_advertise_routes`, and `0.0.0.0/0`, `::/0` for
`tailscale_advertise_exit_node`) carries no traffic until the tailnet approves it: an admin, the API's
`POST /api/v2/device/{id}/routes` with `{"routes": [...]}` (which replaces the approved list, so the
routes approved before are sent again), or the policy's `autoApprovers`. Like `key_expiry`, this runs
in the `tailnix` process after the deploy: the OAuth client never reaches a host.

Approval is read from the hosts themselves (`tailscale status --json`, `ipn/ipnlocal/local.go`
`peerStatusFromNode`): a node's `AllowedIPs` hold its approved routes, its `PrimaryRoutes` the subnet
routes it serves, and `ExitNodeOption` says its exit routes are approved. A host whose routes are
approved already (by `autoApprovers`, or earlier) costs no API call and needs no client. Then another
fleet host proves it: this node is in that peer's `Peer` map with the routes as its `PrimaryRoutes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailnix import mint
from tailnix.advertised_routes import EXIT_ROUTES, UNAPPROVED, describe, unapproved_routes, wanted_routes
from tailnix.fleet import FleetHost
from tailnix.runner import read_fact
from tailnix.status import FLEET_STATUS_FACT

SCOPE = "devices:core"


@dataclass(frozen=True)
class RouteResult:
    """What became of one host's advertised routes."""

    host: str
    ok: bool
    message: str


def _seen_from_peer(
    name: str, node_id: str, wanted: list[str], statuses: dict[str, dict[str, Any]]
) -> tuple[bool, str]:
    """Whether another Running fleet host sees `wanted` as this node's routes, and the words for it."""
    peers = [other for other in statuses if other != name]
    if not peers:
        return True, "no other fleet host is Running to see them from"
    peer = peers[0]
    views = [p for p in (statuses[peer].get("Peer") or {}).values() if str(p.get("ID")) == node_id]
    if not views:
        return False, f"{peer} does not see this node as a peer"
    view = views[0]
    subnets = [route for route in wanted if route not in EXIT_ROUTES]
    missing = [route for route in subnets if route not in (view.get("PrimaryRoutes") or [])]
    if missing:
        return False, f"{peer} does not see {', '.join(missing)} among its PrimaryRoutes"
    if len(subnets) < len(wanted) and not view.get("ExitNodeOption"):
        return False, f"{peer} does not see it as an exit node option"
    seen = [f"{', '.join(subnets)} as its primary routes"] if subnets else []
    if len(subnets) < len(wanted):
        seen.append("it as an exit node")
    return True, f"{peer} sees {' and '.join(seen)}"


def _running(reading_values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    statuses = {}
    for name, value in reading_values.items():
        status = (value or {}).get("tailscale") or {}
        if status.get("BackendState") == "Running" and (status.get("Self") or {}).get("ID"):
            statuses[name] = status
    return statuses


def read_unapproved(inventory_file: Path, hosts: list[FleetHost]) -> dict[str, list[str]]:
    """For `deploy --dry`: host -> the routes its settings advertise that its tailnet has not approved yet."""
    wanted = {host.name: routes for host in hosts if (routes := wanted_routes(host))}
    if not wanted:
        return {}
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, [h for h in hosts if h.name in wanted])
    unapproved = {}
    for name, routes in wanted.items():
        own = (((reading.values.get(name) or {}).get("tailscale") or {}).get("Self")) or {}
        missing = unapproved_routes(routes, own)
        if missing:
            unapproved[name] = missing
    return unapproved


def approval_change(routes: list[str]) -> str:
    """The `deploy --dry` line for routes that wait for approval."""
    return (
        f"approve {describe(routes)} through the Tailscale API, unless the tailnet's autoApprovers cover them"
    )


def approve_routes(
    inventory_file: Path,
    hosts: list[FleetHost],
    fleet: list[FleetHost],
    *,
    find_client: Callable[[], mint.OAuthClient | None],
    base_url: str,
) -> list[RouteResult]:
    """Approve the advertised routes of `hosts` where the tailnet has not, and verify them from a peer.

    + hosts: the hosts the deploy left on their new configuration
    + fleet: every host of the inventory (the peers that verify)
    + find_client: the OAuth client (from the environment or --oauth-file), None when there is none
    + base_url: the Tailscale API
    """
    wanted = {host.name: routes for host in hosts if (routes := wanted_routes(host))}
    if not wanted:
        return []
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, fleet)
    statuses = _running(reading.values)
    results: list[RouteResult] = []
    pending: dict[str, tuple[str, list[str]]] = {}
    for name, routes in wanted.items():
        if name not in statuses:
            reason = reading.errors.get(name) or reading.refused.get(name) or "its node is not Running"
            results.append(RouteResult(name, False, f"its routes could not be read: {reason}"))
            continue
        own = statuses[name]["Self"]
        missing = unapproved_routes(routes, own)
        if missing:
            pending[name] = (str(own["ID"]), missing)
    if pending:
        try:
            client = find_client()
            if client is None:
                raise mint.MintError("no OAuth client")
            api = mint.check_base_url(base_url)
            token = mint.access_token(api, client)
        except mint.MintError as error:
            for name, (_, missing) in pending.items():
                message = UNAPPROVED.format(routes=describe(missing))
                if str(error) != "no OAuth client":
                    message += f"; the Tailscale API: {error}"
                results.append(RouteResult(name, False, message))
            wanted = {name: routes for name, routes in wanted.items() if name not in pending}
        else:
            for name, (device_id, missing) in pending.items():
                try:
                    enabled = mint.approve_device_routes(api, token, device_id, missing)
                except mint.MintError as error:
                    results.append(RouteResult(name, False, f"approving its routes: {error}"))
                    wanted.pop(name)
                    continue
                refused = [route for route in missing if route not in enabled]
                if refused:
                    results.append(RouteResult(name, False, UNAPPROVED.format(routes=describe(refused))))
                    wanted.pop(name)
            statuses = _running(read_fact(inventory_file, FLEET_STATUS_FACT, fleet).values)
    for name, routes in wanted.items():
        if name not in statuses:
            continue
        how = (
            f"through {base_url}"
            if name in pending
            else "by the tailnet (autoApprovers or an earlier approval)"
        )
        seen, words = _seen_from_peer(name, str(statuses[name]["Self"]["ID"]), routes, statuses)
        results.append(RouteResult(name, seen, f"routes {describe(routes)} approved {how}; {words}"))
    return results
