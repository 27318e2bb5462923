"""The routes a host advertises by its settings, and which of them its tailnet has approved.

A node's own `tailscale status --json` tells: `Self.AllowedIPs` holds its addresses and its approved
routes (`peerStatusFromNode` in tailscale's `ipn/ipnlocal/local.go` fills the node's own status as it fills
a peer's). A route advertised and not in it carries no traffic from the peers.
"""

from __future__ import annotations

from typing import Any

from tailnix.fleet import FleetHost
from tailnix.prefix import ALL_IPV4, ALL_IPV6, PrefixError, calc_advertise_routes
from tailnix.settings import SettingsError, parse_settings

EXIT_ROUTES = (str(ALL_IPV4), str(ALL_IPV6))


def wanted_routes(host: FleetHost) -> list[str]:
    """The routes the host's settings advertise, in the CLI's order (the exit routes included)."""
    try:
        settings = parse_settings(host.name, host.data)
        return [
            str(p) for p in calc_advertise_routes(settings.advertise_routes, settings.advertise_exit_node)
        ]
    except (SettingsError, PrefixError):
        return []  # the deploy has refused the host already


def unapproved_routes(wanted: list[str], own: dict[str, Any]) -> list[str]:
    """The routes of `wanted` that the node's `Self.AllowedIPs` do not hold: not approved by the tailnet."""
    allowed = set(own.get("AllowedIPs") or [])
    return [route for route in wanted if route not in allowed]


def describe(routes: list[str]) -> str:
    """`routes` as a person reads them: the exit routes said as an exit node."""
    subnets = [route for route in routes if route not in EXIT_ROUTES]
    words = [", ".join(subnets)] if subnets else []
    if any(route in EXIT_ROUTES for route in routes):
        words.append("the exit node")
    return " and ".join(words)


UNAPPROVED = (
    "advertised but not approved: {routes}: peers cannot use them until the tailnet approves them "
    "(deploy with an OAuth client with the devices:core scope, or add them to the policy's autoApprovers)"
)
