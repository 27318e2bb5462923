"""A host's life on a headscale fleet, end to end: retire and reinstall delete its node on the headscale server.

What headscale v0.29.2 does, from its source: `cmd/headscale/cli/nodes.go` (`nodes list -o json`, `nodes delete
-i ID` with the root's `--force`), `hscontrol/grpcv1.go` (`nodesToProto`: a node's `name` is the host name it
reported, its `user` the owner, `tagged-devices` for a tagged node), `hscontrol/types/node.go` (`StableID`: the
node's ID in decimal is its `Self.ID`), `hscontrol/state/node_store.go` (`resolveGivenName`: a second node of
a name that another node holds gets `NAME-1`). The headscale host is a lab other-OS host with the lab's
`headscale`; no Tailscale API client is given to any command here, so every deletion is headscale's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab, LabHost

from .test_fleet import backend_state, new_fleet
from .test_headscale import HeadscaleFleet, headscale_key
from .test_reinstall import lose_tailscale_state

pytestmark = pytest.mark.lab

USER = "life"


@pytest.fixture(scope="module")
def hs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadscaleFleet]:
    """Two NixOS hosts on a headscale server, bootstrapped with a key of its user `life`, Running."""
    server = lab.add_host(os="debian")
    lab.ssh(server.name, f"headscale users create {USER}")
    hosts = [lab.add_host(os="nixos"), lab.add_host(os="nixos")]
    directory: Path = tmp_path_factory.mktemp("headscale-life")
    fleet = new_fleet(lab, directory, hosts, headscale_key(lab, server.name, USER))
    created = HeadscaleFleet(fleet, server, user=USER)
    created.write_inventory()
    bootstrapped = fleet.tailnix("bootstrap", *(h.name for h in hosts), "-i", "inventory.py")
    assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
    yield created
    for host in (*hosts, server):
        lab.stop_host(host.name)


def _retire(hs: HeadscaleFleet, *arguments: str) -> subprocess.CompletedProcess[str]:
    return hs.fleet.tailnix("retire", *arguments, "-i", "inventory.py")


def _named(hs: HeadscaleFleet, name: str) -> list[dict[str, object]]:
    return [node for node in hs.nodes() if node["name"] == name]


def test_a_reinstalled_host_gets_its_name_back_after_its_old_node_is_deleted_on_headscale(
    hs: HeadscaleFleet,
) -> None:
    lab, host = hs.fleet.lab, hs.fleet.hosts[1].name
    [old] = _named(hs, host)
    lose_tailscale_state(lab, host)

    dry = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host, "--dry")
    deployed = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host)

    said = (
        f"{host}: deleted the offline device {host} ({old['id']}) with `headscale nodes delete` on "
        f"{hs.server.name}, so that the node joins as {host}"
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert said.replace(": deleted", ": delete", 1) in dry.stdout
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert said in deployed.stdout
    [new] = _named(hs, host)
    own = json.loads(lab.ssh(host, "tailscale status --json --peers=false").stdout)["Self"]
    assert new["id"] != old["id"] and own["ID"] == str(new["id"])
    assert new["given_name"] == host and own["DNSName"].startswith(f"{host}.")


def test_a_new_node_gets_its_tags_on_headscale_at_the_next_deploy(hs: HeadscaleFleet) -> None:
    """headscale v0.29.2 `hscontrol/state/state.go` (`createAndSaveNewNode`): a new node gets its pre-auth key's
    tags (none, from a user's key) and may ask for none; up is not given `--advertise-tags` there, so the node
    joins, verify names the command that tags it, and the next `tailnix deploy` runs it."""
    lab, host = hs.fleet.lab, hs.fleet.hosts[1].name
    lose_tailscale_state(lab, host)
    hs.write_inventory(tailscale_advertise_tags=["tag:server"])
    try:
        joined = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host)
        tagged = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host)
    finally:
        hs.write_inventory()
    [node] = _named(hs, host)
    said = joined.stdout + joined.stderr
    assert joined.returncode == 1, said
    assert (
        "Tailscale is Running but control did not grant tag:server (the node carries no tags): headscale gives a "
        f"node the tags of its pre-auth key. Set them on the headscale server (headscale nodes tag -i {node['id']} "
        "-t tag:server;"
    ) in said
    assert tagged.returncode == 0, tagged.stdout + tagged.stderr
    assert f"{host}: tags none -> tag:server on headscale" in tagged.stdout
    assert node["tags"] == ["tag:server"] and node["given_name"] == host


def test_retire_with_keep_device_leaves_the_node_on_headscale(hs: HeadscaleFleet) -> None:
    host = hs.fleet.hosts[0].name
    [node] = _named(hs, host)
    dry = _retire(hs, host, "--dry")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert (
        f"tailnet: delete the device {host} ({node['id']}) with `headscale nodes delete` on {hs.server.name}"
        in dry.stdout.splitlines()
    )

    kept = _retire(hs, host, "--yes", "--keep-device")

    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "tailnet: the device is kept (--keep-device)" in kept.stdout
    assert f"{host}: logged out" in kept.stdout
    assert [n["id"] for n in _named(hs, host)] == [node["id"]]


def test_retire_then_deletes_the_node_it_finds_by_name_and_user(hs: HeadscaleFleet) -> None:
    """The host is logged out now (no `Self.ID`): its node is the one of its name and the fleet's user."""
    host = hs.fleet.hosts[0].name
    [node] = _named(hs, host)

    retired = _retire(hs, host, "--yes")

    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert (
        f"tailnet: deleted the device {host} ({node['id']}) with `headscale nodes delete` on {hs.server.name}"
        in retired.stdout
    )
    assert _named(hs, host) == []
    again = _retire(hs, host, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout == f"{host}: retired already: nothing to do\n"


def test_two_nodes_of_the_hosts_name_are_both_kept_and_listed(hs: HeadscaleFleet, lab: Lab) -> None:
    """A host that does not answer, and two nodes of its name and the fleet's user: neither is deleted."""
    absent: LabHost = lab.add_host(os="nixos")
    lab.stop_host(absent.name)
    control = ControlPlane(lab.layout.control)
    key = headscale_key(lab, hs.server.name, USER)
    for machine in ("a", "b"):
        control.login(key, node_key=f"nodekey:{absent.name}-{machine}", hostname=absent.name)
    ids = [n["id"] for n in _named(hs, absent.name)]
    hs.write_inventory(extra=(absent.name,))
    try:
        result = _retire(hs, absent.name, "--yes")
    finally:
        hs.write_inventory()
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert (
        f"2 devices are named {absent.name} ({absent.name} ({ids[0]}), {absent.name}-1 ({ids[1]})) and the host "
        f"did not say which is its own: none is deleted; remove the right one with `headscale nodes delete -i "
        f"ID` on {hs.server.name}"
    ) in said
    assert [n["id"] for n in _named(hs, absent.name)] == ids
    assert backend_state(lab, hs.fleet.hosts[1].name) == "Running"
