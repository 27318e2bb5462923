"""Advertised routes and exit nodes: approved through the Tailscale API, then seen from another fleet host.

A route a node advertises (`tailscale_advertise_routes`, and `0.0.0.0/0`, `::/0` for
`tailscale_advertise_exit_node`) carries no traffic until the tailnet approves it: an admin, the API's
`POST /api/v2/device/{id}/routes` with `{"routes": [...]}` (which replaces the approved list, so the
routes approved before are sent again), or the policy's `autoApprovers`. Like `key_expiry`, this runs
in the `tailnix` process after the deploy: the OAuth client never reaches a host.

Approval is read from the hosts themselves (`tailscale status --json`, `ipn/ipnlocal/local.go`
`peerStatusFromNode`): a node's `AllowedIPs` hold its approved routes, its `PrimaryRoutes` the subnet
routes it serves, and `ExitNodeOption` says its exit routes are approved. A host whose routes are
approved already (by `autoApprovers`, or earlier) costs no API call and needs no client. Then other
fleet hosts prove it (two, or every other Running one when there are fewer): this node is in each one's
`Peer` map with exactly the wanted routes as its `PrimaryRoutes`, and offers itself as an exit node only
when it should.

An approval outlives the route's advertisement (`publicapi/device.md`, "Subnet routes": a node that
advertises an approved route again serves it at once, without anybody approving it again). So the
routes tailnix approved through the API are recorded (`node_records`, `approved_routes`), and when a host
no longer advertises one of them the deploy withdraws its approval with the same call, the list sent
without it. Approvals made by an admin or by `autoApprovers` are not tailnix's, and are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tailnix import mint
from tailnix.advertised_routes import EXIT_ROUTES, UNAPPROVED, describe, unapproved_routes, wanted_routes
from tailnix.fleet import FleetHost, inventory_directory
from tailnix.node_records import (
    RECORD_FILE,
    NodeRecord,
    NodeRecordError,
    node_of,
    read_records,
    update_records,
)
from tailnix.runner import read_fact
from tailnix.status import FLEET_STATUS_FACT

SCOPE = "devices:core"


@dataclass(frozen=True)
class RouteResult:
    """What became of one host's advertised routes."""

    host: str
    ok: bool
    message: str
    warning: bool = False
    """Said to the user whatever the verbosity, without failing the host."""


PEERS_THAT_VERIFY = 2
"""From how many other Running fleet hosts a node's routes are checked (all of them when fewer)."""


def _peer_view(peer: str, node_id: str, wanted: list[str], status: dict[str, Any]) -> str | None:
    """What is wrong with `peer`'s view of the node's routes, None when it sees exactly `wanted`."""
    views = [p for p in (status.get("Peer") or {}).values() if str(p.get("ID")) == node_id]
    if not views:
        return f"{peer} does not see this node as a peer"
    primary = views[0].get("PrimaryRoutes") or []
    subnets = [route for route in wanted if route not in EXIT_ROUTES]
    missing = [route for route in subnets if route not in primary]
    if missing:
        return f"{peer} does not see {', '.join(missing)} among its PrimaryRoutes"
    extra = [route for route in primary if route not in subnets]
    if extra:
        return f"{peer} still sees {', '.join(extra)} among its PrimaryRoutes, which it no longer advertises"
    exit_node = len(subnets) < len(wanted)
    if exit_node and not views[0].get("ExitNodeOption"):
        return f"{peer} does not see it as an exit node option"
    if not exit_node and views[0].get("ExitNodeOption"):
        return f"{peer} still sees it as an exit node option, which it no longer offers"
    return None


def _seen_from_peers(
    name: str, node_id: str, wanted: list[str], statuses: dict[str, dict[str, Any]]
) -> tuple[bool, str]:
    """Whether other Running fleet hosts see `wanted` as this node's routes, and the words for it."""
    peers = sorted(other for other in statuses if other != name)[:PEERS_THAT_VERIFY]
    if not peers:
        return True, "no other fleet host is Running to see them from"
    problems = [problem for peer in peers if (problem := _peer_view(peer, node_id, wanted, statuses[peer]))]
    if problems:
        return False, "; ".join(problems)
    subnets = [route for route in wanted if route not in EXIT_ROUTES]
    seen = [f"{', '.join(subnets)} as its primary routes"] if subnets else []
    if len(subnets) < len(wanted):
        seen.append("it as an exit node")
    who = " and ".join(peers)
    if not seen:
        return True, f"{who} {'see' if len(peers) > 1 else 'sees'} no route of it"
    return True, f"{who} {'see' if len(peers) > 1 else 'sees'} {' and '.join(seen)}"


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


def read_withdrawals(inventory_file: Path, hosts: list[FleetHost]) -> dict[str, list[str]]:
    """For `deploy --dry`: host -> the routes tailnix approved through the API that its settings no longer
    advertise (read from `tailnix-nodes.json`, no host asked)."""
    try:
        records = read_records(inventory_directory(inventory_file))
    except NodeRecordError:
        return {}
    withdrawals = {}
    for host in hosts:
        if host.name in records:
            wanted = wanted_routes(host)
            stale = [route for route in records[host.name].approved_routes if route not in wanted]
            if stale:
                withdrawals[host.name] = stale
    return withdrawals


def withdrawal_change(routes: list[str]) -> str:
    """The `deploy --dry` line for approvals to withdraw."""
    return f"withdraw the approval of {describe(routes)} through the Tailscale API: no longer advertised"


def approval_change(routes: list[str]) -> str:
    """The `deploy --dry` line for routes that wait for approval."""
    return (
        f"approve {describe(routes)} through the Tailscale API, unless the tailnet's autoApprovers cover them"
    )


@dataclass
class _ApiChange:
    """What the API is to do for one host's device."""

    record: NodeRecord
    approve: list[str]
    withdraw: list[str]


def approve_routes(
    inventory_file: Path,
    hosts: list[FleetHost],
    fleet: list[FleetHost],
    *,
    find_client: Callable[[], mint.OAuthClient | None],
    base_url: str,
) -> list[RouteResult]:
    """Approve the advertised routes of `hosts` where the tailnet has not, withdraw the approvals tailnix
    made for routes they no longer advertise, and verify them from other fleet hosts.

    + hosts: the hosts the deploy left on their new configuration
    + fleet: every host of the inventory (the peers that verify)
    + find_client: the OAuth client (from the environment or --oauth-file), None when there is none
    + base_url: the Tailscale API
    """
    directory = inventory_directory(inventory_file)
    results: list[RouteResult] = []
    try:
        records = read_records(directory)
    except NodeRecordError as error:
        records = {}
        path = str(directory / RECORD_FILE)
        said = str(error).removeprefix(f"{path}: ")
        results.append(
            RouteResult(
                path, True, f"{said}; the approvals tailnix made are not known, none is withdrawn", True
            )
        )
    wanted = {host.name: wanted_routes(host) for host in hosts}
    stale = {
        name: [route for route in records[name].approved_routes if route not in routes]
        for name, routes in wanted.items()
        if name in records
    }
    checked = {name: routes for name, routes in wanted.items() if routes or stale.get(name)}
    if not checked:
        return results
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, fleet)
    statuses = _running(reading.values)
    changes: dict[str, _ApiChange] = {}
    for name, routes in checked.items():
        if name not in statuses:
            reason = reading.errors.get(name) or reading.refused.get(name) or "its node is not Running"
            results.append(RouteResult(name, False, f"its routes could not be read: {reason}"))
            continue
        own = statuses[name]["Self"]
        record = records.get(name)
        withdraw = stale.get(name, [])
        if record is None or record.node_id != str(own["ID"]):
            # A new device (the host joined again): the approvals recorded were the old device's.
            record = node_of(statuses[name]) or NodeRecord(str(own["ID"]), "", "")
            withdraw = []
        missing = unapproved_routes(routes, own)
        if missing or withdraw:
            changes[name] = _ApiChange(record, missing, withdraw)
    approved_now: set[str] = set()
    if changes:
        try:
            client = find_client()
            if client is None:
                raise mint.MintError("no OAuth client")
            api = mint.check_base_url(base_url)
            token = mint.access_token(api, client)
        except mint.MintError as error:
            for name, change in changes.items():
                api_words = "" if str(error) == "no OAuth client" else f"; the Tailscale API: {error}"
                if change.withdraw:
                    results.append(
                        RouteResult(
                            name,
                            True,
                            f"warning: tailnix approved {describe(change.withdraw)} through the Tailscale API, "
                            "and it no longer advertises them: the approval stays, and would let it serve them "
                            "again at once, until a deploy with an OAuth client (devices:core) withdraws it, or "
                            f"an admin does in the admin console{api_words}",
                            warning=True,
                        )
                    )
                if change.approve:
                    results.append(
                        RouteResult(
                            name, False, UNAPPROVED.format(routes=describe(change.approve)) + api_words
                        )
                    )
                    checked.pop(name)
        else:
            updated: dict[str, NodeRecord | None] = {}
            for name, change in changes.items():
                try:
                    enabled = mint.change_device_routes(
                        api, token, change.record.node_id, approve=change.approve, withdraw=change.withdraw
                    )
                except mint.MintError as error:
                    results.append(RouteResult(name, False, f"setting its routes: {error}"))
                    checked.pop(name)
                    continue
                kept = [r for r in change.record.approved_routes if r not in change.withdraw and r in enabled]
                approved = [*kept, *(r for r in change.approve if r in enabled and r not in kept)]
                updated[name] = replace(change.record, approved_routes=tuple(approved))
                if change.withdraw:
                    results.append(
                        RouteResult(
                            name,
                            True,
                            f"withdrew the approval of {describe(change.withdraw)} through {base_url}: "
                            "it no longer advertises them",
                        )
                    )
                refused = [route for route in change.approve if route not in enabled]
                if refused:
                    results.append(RouteResult(name, False, UNAPPROVED.format(routes=describe(refused))))
                    checked.pop(name)
                elif change.approve:
                    approved_now.add(name)
            update_records(directory, updated, keep_routes=False)
            statuses = _running(read_fact(inventory_file, FLEET_STATUS_FACT, fleet).values)
    for name, routes in checked.items():
        if name not in statuses:
            continue
        seen, words = _seen_from_peers(name, str(statuses[name]["Self"]["ID"]), routes, statuses)
        if not routes:
            if not seen:
                results.append(RouteResult(name, False, f"routes withdrawn, but {words}"))
            continue
        how = (
            f"through {base_url}"
            if name in approved_now
            else "by the tailnet (autoApprovers or an earlier approval)"
        )
        results.append(RouteResult(name, seen, f"routes {describe(routes)} approved {how}; {words}"))
    return results
