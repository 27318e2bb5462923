"""Advertised routes and exit nodes: approved through the API or by autoApprovers, proved from a peer.

Sources: the API v2 (`publicapi/device.md`, "Get device routes" and "Set device routes"):
`GET /api/v2/device/{deviceID}/routes` answers `{"advertisedRoutes", "enabledRoutes"}`, and `POST` to it
with `{"routes": [...]}` sets the approved routes (scope devices:core). The policy's `autoApprovers`
(tailscale.com/kb/1337, policy file syntax): `"routes": {"10.0.0.0/8": ["tag:server"]}` approves the
routes inside that prefix for nodes tagged tag:server; `"exitNode": [...]` the exit routes. A peer's view is
`tailscale status --json`, whose `Peer` entries are filled by `peerStatusFromNode` (tailscale v1.90.6,
`ipn/ipnlocal/local.go`): `PrimaryRoutes` the subnet routes the node serves, `AllowedIPs` its addresses and
approved routes, `ExitNodeOption` when both exit routes are approved (`tsaddr.ContainsExitRoutes`).

Two fresh hosts tagged tag:server, bootstrapped once; each test sets the routes it needs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tailnix_lab.emulator.api import TailscaleApi
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab

from .test_fleet import Fleet, new_fleet

pytestmark = pytest.mark.lab

NO_CLIENT = {"TS_API_CLIENT_ID": "", "TS_API_CLIENT_SECRET": "", "TS_BASE_URL": ""}
SUBNET = "192.168.50.0/24"
"""Outside the lab policy's autoApprovers (10.0.0.0/8 for tag:server)."""
UNAPPROVED = "192.168.51.0/24"
"""Outside them too, and never approved (each test stands alone: xdist may run them apart)."""
AUTO_APPROVED = "10.20.0.0/24"


@pytest.fixture(scope="module")
def routes_fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two fresh hosts joined with tag:server and Running, advertising nothing yet."""
    hosts = [lab.add_host(os="nixos"), lab.add_host(os="nixos")]
    first_key = ControlPlane(lab.layout.control).mint_key(reusable=True, tags=("tag:server",))
    created = new_fleet(lab, tmp_path_factory.mktemp("routes-fleet"), hosts, first_key)
    created.write_inventory(**{h.name: {"tailscale_advertise_tags": ["tag:server"]} for h in hosts})
    names = [h.name for h in hosts]
    bootstrapped = created.tailnix("bootstrap", *names, "-i", "inventory.py", env=NO_CLIENT)
    assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
    yield created
    for host in hosts:
        lab.stop_host(host.name)


def _seen_by(fleet: Fleet, viewer: str, node: str) -> dict[str, object]:
    """`tailscale status --json` on `viewer`: its Peer entry of the host called `node`."""
    status = json.loads(fleet.lab.ssh(viewer, "tailscale status --json").stdout)
    [peer] = [p for p in status["Peer"].values() if p["HostName"] == node]
    assert isinstance(peer, dict)
    return peer


def _deploy(fleet: Fleet, env: dict[str, str], *, returncode: int = 0) -> subprocess.CompletedProcess[str]:
    deployed = fleet.tailnix("deploy", "-i", "inventory.py", env=env)
    assert deployed.returncode == returncode, deployed.stdout + deployed.stderr
    return deployed


def _status_entry(fleet: Fleet, host: str) -> dict[str, object]:
    document = json.loads(fleet.tailnix("status", "-i", "inventory.py", "--json").stdout)
    [entry] = [h for h in document["hosts"] if h["name"] == host]
    assert isinstance(entry, dict)
    return entry


def test_a_route_nobody_approves_is_reported_for_its_host(routes_fleet: Fleet) -> None:
    router, peer = (h.name for h in routes_fleet.hosts)
    routes_fleet.write_inventory(
        **{router: {"tailscale_advertise_tags": ["tag:server"], "tailscale_advertise_routes": [UNAPPROVED]}},
        **{peer: {"tailscale_advertise_tags": ["tag:server"]}},
    )
    planned = routes_fleet.tailnix("deploy", "-i", "inventory.py", "--dry", env=NO_CLIENT)
    assert (
        f"approve {UNAPPROVED} through the Tailscale API, unless the tailnet's autoApprovers cover them"
    ) in planned.stdout
    deployed = _deploy(routes_fleet, NO_CLIENT, returncode=1)
    assert f"{router}: advertised but not approved: {UNAPPROVED}: peers cannot use them" in deployed.stderr
    summary = [line for line in deployed.stdout.splitlines() if line.startswith(router)]
    assert any("failed" in line and "advertised but not approved" in line for line in summary), (
        deployed.stdout
    )

    assert "PrimaryRoutes" not in _seen_by(routes_fleet, peer, router)
    entry = _status_entry(routes_fleet, router)
    assert entry["unapproved_routes"] == [UNAPPROVED]
    assert f"advertised but not approved: {UNAPPROVED}" in " ".join(entry["problems"])  # type: ignore[arg-type]
    assert _status_entry(routes_fleet, peer)["unapproved_routes"] == []


def test_the_deploy_approves_routes_and_the_exit_node_through_the_api(routes_fleet: Fleet) -> None:
    router, peer = (h.name for h in routes_fleet.hosts)
    routes_fleet.write_inventory(
        **{
            router: {
                "tailscale_advertise_tags": ["tag:server"],
                "tailscale_advertise_routes": [SUBNET],
                "tailscale_advertise_exit_node": True,
            }
        },
        **{peer: {"tailscale_advertise_tags": ["tag:server"]}},
    )
    with TailscaleApi(routes_fleet.lab.layout.control) as api:
        client_id, secret = api.add_client(("tag:server",))
        env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
        deployed = _deploy(routes_fleet, env)
        assert (
            f"{router}: routes {SUBNET} and the exit node approved through {api.url}; "
            f"{peer} sees {SUBNET} as its primary routes and it as an exit node"
        ) in deployed.stdout
        assert [r.method for r in api.requests if r.path.endswith("/routes")] == ["GET", "POST"]

    seen = _seen_by(routes_fleet, peer, router)
    assert seen["PrimaryRoutes"] == [SUBNET]
    assert seen["ExitNodeOption"] is True
    assert _status_entry(routes_fleet, router)["unapproved_routes"] == []


def test_routes_the_autoapprovers_cover_need_no_api(routes_fleet: Fleet) -> None:
    router, peer = (h.name for h in routes_fleet.hosts)
    routes_fleet.write_inventory(
        **{router: {"tailscale_advertise_tags": ["tag:server"]}},
        **{peer: {"tailscale_advertise_tags": ["tag:server"], "tailscale_advertise_routes": [AUTO_APPROVED]}},
    )
    deployed = _deploy(routes_fleet, NO_CLIENT)
    assert (
        f"{peer}: routes {AUTO_APPROVED} approved by the tailnet (autoApprovers or an earlier approval); "
        f"{router} sees {AUTO_APPROVED} as its primary routes"
    ) in deployed.stdout
    assert _seen_by(routes_fleet, router, peer)["PrimaryRoutes"] == [AUTO_APPROVED]
    assert _seen_by(routes_fleet, router, peer)["ExitNodeOption"] is False
