"""Advertised routes and exit nodes: approved through the API or by autoApprovers, proved from a peer.

Sources: the API v2 (`publicapi/device.md`, "Get device routes" and "Set device routes"):
`GET /api/v2/device/{deviceID}/routes` answers `{"advertisedRoutes", "enabledRoutes"}`, and `POST` to it
with `{"routes": [...]}` sets the approved routes (scope devices:core). The policy's `autoApprovers`
(tailscale.com/kb/1337, policy file syntax): `"routes": {"10.0.0.0/8": ["tag:server"]}` approves the
routes inside that prefix for nodes tagged tag:server; `"exitNode": [...]` the exit routes. A peer's view is
`tailscale status --json`, whose `Peer` entries are filled by `peerStatusFromNode` (tailscale v1.90.6,
`ipn/ipnlocal/local.go`): `PrimaryRoutes` the subnet routes the node serves, `AllowedIPs` its addresses and
approved routes, `ExitNodeOption` when both exit routes are approved (`tsaddr.ContainsExitRoutes`).

An approval outlives the advertisement (`publicapi/device.md`, "Subnet routes": a node that advertises an
approved route again serves it at once), so the approvals the deploy made are withdrawn, with the same
`POST`, when the host stops advertising their routes.

Three fresh hosts tagged tag:server, bootstrapped once; each test sets the routes it needs. The routes of
a host are verified from the two others.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
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
SECOND_SUBNET = "192.168.52.0/24"
"""Outside the autoApprovers: approved through the API, then dropped."""


@pytest.fixture(scope="module")
def routes_fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three fresh hosts joined with tag:server and Running, advertising nothing yet."""
    hosts = [lab.add_host(os="nixos") for _ in range(3)]
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


def _see(viewers: list[str]) -> str:
    """How the deploy names the peers that checked a node's routes."""
    return f"{' and '.join(sorted(viewers))} {'see' if len(viewers) > 1 else 'sees'}"


def _tagged(**routes: dict[str, object]) -> dict[str, dict[str, object]]:
    """Host data: every host tag:server, plus the given settings per host."""
    return {
        name: {"tailscale_advertise_tags": ["tag:server"], **settings} for name, settings in routes.items()
    }


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
    router, peer, third = (h.name for h in routes_fleet.hosts)
    routes_fleet.write_inventory(
        **_tagged(**{router: {"tailscale_advertise_routes": [UNAPPROVED]}, peer: {}, third: {}})
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
    router, peer, third = (h.name for h in routes_fleet.hosts)
    routes_fleet.write_inventory(
        **_tagged(
            **{
                router: {"tailscale_advertise_routes": [SUBNET], "tailscale_advertise_exit_node": True},
                peer: {},
                third: {},
            }
        )
    )
    with TailscaleApi(routes_fleet.lab.layout.control) as api:
        client_id, secret = api.add_client(("tag:server",))
        env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
        deployed = _deploy(routes_fleet, env)
        assert (
            f"{router}: routes {SUBNET} and the exit node approved through {api.url}; "
            f"{_see([peer, third])} {SUBNET} as its primary routes and it as an exit node"
        ) in deployed.stdout
        assert [r.method for r in api.requests if r.path.endswith("/routes")] == ["GET", "POST"]

    seen = _seen_by(routes_fleet, peer, router)
    assert seen["PrimaryRoutes"] == [SUBNET]
    assert seen["ExitNodeOption"] is True
    assert _status_entry(routes_fleet, router)["unapproved_routes"] == []


def test_routes_the_autoapprovers_cover_need_no_api(routes_fleet: Fleet) -> None:
    router, peer, third = (h.name for h in routes_fleet.hosts)
    routes_fleet.write_inventory(
        **_tagged(**{router: {}, peer: {"tailscale_advertise_routes": [AUTO_APPROVED]}, third: {}})
    )
    deployed = _deploy(routes_fleet, NO_CLIENT)
    assert (
        f"{peer}: routes {AUTO_APPROVED} approved by the tailnet (autoApprovers or an earlier approval); "
        f"{_see([router, third])} {AUTO_APPROVED} as its primary routes"
    ) in deployed.stdout
    assert _seen_by(routes_fleet, router, peer)["PrimaryRoutes"] == [AUTO_APPROVED]
    assert _seen_by(routes_fleet, router, peer)["ExitNodeOption"] is False


def test_an_approval_the_deploy_made_is_withdrawn_when_its_route_is_dropped(routes_fleet: Fleet) -> None:
    router, peer, third = (h.name for h in routes_fleet.hosts)
    both = {"tailscale_advertise_routes": [SUBNET, SECOND_SUBNET]}
    routes_fleet.write_inventory(**_tagged(**{router: both, peer: {}, third: {}}))
    with TailscaleApi(routes_fleet.lab.layout.control) as api:
        client_id, secret = api.add_client(("tag:server",))
        env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
        _deploy(routes_fleet, env)
        node_id = json.loads((routes_fleet.directory / "tailnix-nodes.json").read_text())["hosts"][router][
            "node_id"
        ]
        routes_of = f"/api/v2/device/{node_id}/routes"
        token = api.issue_token(client_id)
        assert sorted(_api_get(api, token, routes_of)["enabledRoutes"]) == [SUBNET, SECOND_SUBNET]

        routes_fleet.write_inventory(
            **_tagged(**{router: {"tailscale_advertise_routes": [SUBNET]}, peer: {}, third: {}})
        )
        planned = routes_fleet.tailnix("deploy", "-i", "inventory.py", "--dry", env=env)
        assert (
            f"withdraw the approval of {SECOND_SUBNET} through the Tailscale API: no longer advertised"
        ) in planned.stdout, planned.stdout + planned.stderr
        deployed = _deploy(routes_fleet, env)
        assert (
            f"{router}: withdrew the approval of {SECOND_SUBNET} through {api.url}: it no longer advertises them"
        ) in deployed.stdout
        assert f"{_see([peer, third])} {SUBNET} as its primary routes" in deployed.stdout
        assert _api_get(api, token, routes_of) == {"advertisedRoutes": [SUBNET], "enabledRoutes": [SUBNET]}
        recorded = json.loads((routes_fleet.directory / "tailnix-nodes.json").read_text())["hosts"][router]
        assert recorded["approved_routes"] == [SUBNET]

        again = _deploy(routes_fleet, env)
        assert "withdrew" not in again.stdout
        assert [r.method for r in api.requests if r.path == routes_of].count("POST") == 2

    for viewer in (peer, third):
        assert _seen_by(routes_fleet, viewer, router)["PrimaryRoutes"] == [SUBNET]
    # No stale approval is left: the route advertised again by hand carries nothing until approved again.
    advertised = routes_fleet.lab.ssh(router, f"tailscale set --advertise-routes={SUBNET},{SECOND_SUBNET}")
    assert advertised.returncode == 0, advertised.stderr
    assert _seen_by(routes_fleet, peer, router)["PrimaryRoutes"] == [SUBNET]


def test_without_a_client_a_stale_approval_is_said_and_kept_on_record(routes_fleet: Fleet) -> None:
    router, peer, third = (h.name for h in routes_fleet.hosts)
    routes_fleet.write_inventory(**_tagged(**{router: {}, peer: {}, third: {}}))
    deployed = _deploy(routes_fleet, NO_CLIENT)
    assert (
        f"{router}: warning: tailnix approved {SUBNET} through the Tailscale API, and it no longer advertises "
        "them: the approval stays"
    ) in deployed.stderr
    recorded = json.loads((routes_fleet.directory / "tailnix-nodes.json").read_text())["hosts"][router]
    assert recorded["approved_routes"] == [SUBNET]


def _api_get(api: TailscaleApi, token: str, path: str) -> dict[str, object]:
    request = urllib.request.Request(api.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request) as answer:
        value = json.loads(answer.read())
    assert isinstance(value, dict)
    return value
