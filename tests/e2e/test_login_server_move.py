"""A Running host moved from Tailscale's control server to a headscale one, end to end, behind the rollback.

What the real systems do: `tailscale up` changes the login server of a Running node only with
`--force-reauth` (tailscale v1.90.6 `cmd/tailscale/cli/up.go`: "can't change --login-server without
--force-reauth"); headscale v0.29.2 registers a machine it does not know as a new node with its pre-auth key's
owner and tags (`hscontrol/state/state.go`, `HandleNodeFromPreAuthKey`, `createAndSaveNewNode`) and lists it
(`cmd/headscale/cli/nodes.go`, `nodes list`). The lab's control plane answers both servers; a node it knows
from Tailscale's is a new node for its headscale stand-in. The fleet's key becomes a headscale one
(`rotate-key --mint`, minted over SSH on the headscale host), then the deploy logs the node in again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix_lab.hosts import Lab

from .test_fleet import backend_state, bootstrapped_fleet
from .test_headscale import LOGIN_SERVER, HeadscaleFleet

pytestmark = pytest.mark.lab

USER = "movers"


@pytest.fixture(scope="module")
def moving(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadscaleFleet]:
    """One host Running on the lab's Tailscale control, and a headscale host with the user `movers`."""
    directory: Path = tmp_path_factory.mktemp("login-server-move")
    fleet = bootstrapped_fleet(lab, directory)
    server = lab.add_host(os="debian")
    lab.ssh(server.name, f"headscale users create {USER}")
    yield HeadscaleFleet(fleet, server, user=USER)
    for host in (*fleet.hosts, server):
        lab.stop_host(host.name)


def _control_url(lab: Lab, host: str) -> str:
    return str(json.loads(lab.ssh(host, "tailscale debug prefs").stdout).get("ControlURL") or "")


def test_a_key_the_headscale_server_refuses_puts_the_host_back_on_its_server(moving: HeadscaleFleet) -> None:
    lab, (host,) = moving.fleet.lab, moving.fleet.hosts
    before = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)["Self"]
    moving.write_inventory()
    minted, result = moving.mint("--days", "30", "--no-deploy")
    assert result.returncode == 0, minted
    listed = json.loads(lab.ssh(moving.server.name, "headscale preauthkeys list -o json").stdout)
    [record] = [k for k in listed if k["key"] == moving.key()[: len("hskey-auth-") + 12] + "-***"]
    lab.ssh(moving.server.name, f"headscale preauthkeys expire --id {record['id']}")

    deployed = moving.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name)

    said = deployed.stdout + deployed.stderr
    assert deployed.returncode == 1, said
    assert (
        f"{LOGIN_SERVER} refused to log {host.name} in: invalid key: API key does not exist; rolled back: "
        "Tailscale is Running again on its previous login server (https://controlplane.tailscale.com)"
    ) in said
    assert backend_state(lab, host.name) == "Running"
    assert _control_url(lab, host.name) in ("", "https://controlplane.tailscale.com")
    after = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)["Self"]
    assert after["ID"] == before["ID"]
    assert [n for n in moving.nodes() if n["name"] == host.name] == []


def test_a_running_host_moves_to_headscale_with_one_new_login(moving: HeadscaleFleet) -> None:
    lab, (host,) = moving.fleet.lab, moving.fleet.hosts
    minted, result = moving.mint("--days", "30", "--no-deploy")
    assert result.returncode == 0, minted

    dry = moving.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name, "--dry")
    deployed = moving.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name)
    again = moving.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name)

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"re-authenticate: login server https://controlplane.tailscale.com -> {LOGIN_SERVER}" in dry.stdout
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"{host.name}: ok, switched" in deployed.stdout
    assert _control_url(lab, host.name) == LOGIN_SERVER
    [node] = [n for n in moving.nodes() if n["name"] == host.name]
    assert node["user"]["name"] == USER and node["online"] is True
    own = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)
    assert own["BackendState"] == "Running" and own["Self"]["ID"] == str(node["id"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{host.name}: ok, -," in again.stdout
