"""A reinstalled host (its Tailscale state lost) joins again while its old device is still on the tailnet.

What the real system does: control gives a node whose name another device of the tailnet holds that name
with a suffix (`desk-1`; tailscale/tailscale #4778), in `Self.DNSName` of `tailscale status --json`
(`ipn/ipnstate/ipnstate.go`). The lab's control does the same (`ControlPlane._unique_dns_name`). Without
an API client the deploy cannot delete the old device, so verify says the name it got, and why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tailnix_lab.emulator.api import TailscaleApi
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab

from .test_fleet import Fleet, bootstrapped_fleet

pytestmark = pytest.mark.lab


def lose_tailscale_state(lab: Lab, name: str) -> None:
    """Wipe the host's /var/lib/tailscale with tailscaled stopped, as a reinstall does; wait for NeedsLogin."""
    lab.ssh(name, "systemctl stop tailscaled && rm -rf /var/lib/tailscale && systemctl start tailscaled")
    # The new daemon answers NoState while it starts, then NeedsLogin: a node that never logged in.
    waited = lab.ssh(
        name,
        "for _ in $(seq 60); do s=$(tailscale status --json --peers=false | jq -r .BackendState); "
        '[ "$s" != NoState ] && break; sleep 0.5; done; echo "$s"',
    )
    assert waited.stdout.strip() == "NeedsLogin"


@contextmanager
def _reinstalled(lab: Lab, directory: Path) -> Iterator[Fleet]:
    """A host bootstrapped, Running, then its /var/lib/tailscale wiped with tailscaled stopped."""
    created = bootstrapped_fleet(lab, directory)
    name = created.hosts[0].name
    try:
        lose_tailscale_state(lab, name)
        yield created
    finally:
        lab.stop_host(name)


@pytest.fixture(scope="module")
def reinstalled(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with _reinstalled(lab, tmp_path_factory.mktemp("reinstall-fleet")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def reinstalled_with_api(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with _reinstalled(lab, tmp_path_factory.mktemp("reinstall-api-fleet")) as fleet:
        yield fleet


def test_without_an_api_client_the_deploy_names_the_suffixed_name(reinstalled: Fleet, lab: Lab) -> None:
    name = reinstalled.hosts[0].name

    deployed = reinstalled.tailnix("deploy", "-i", "inventory.py")

    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    line = next(line for line in deployed.stdout.splitlines() if f"] {name}: " in line)
    assert (
        f"but the tailnet named it {name}-1, not {name}: another device of the tailnet holds {name}" in line
    )
    own = json.loads(lab.ssh(name, "tailscale status --json --peers=false").stdout)["Self"]
    assert own["DNSName"].startswith(f"{name}-1.")


def test_with_an_api_client_the_old_device_is_deleted_and_the_node_gets_its_name(
    reinstalled_with_api: Fleet, lab: Lab
) -> None:
    fleet = reinstalled_with_api
    name = fleet.hosts[0].name
    control = ControlPlane(lab.layout.control)
    (old,) = [n for n in control.nodes() if n["HostName"] == name]

    with TailscaleApi(lab.layout.control) as api:
        client_id, secret = api.add_client(())
        env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
        dry = fleet.tailnix("deploy", "-i", "inventory.py", "--dry", env=env)
        assert [n["ID"] for n in control.nodes() if n["HostName"] == name] == [old["ID"]]
        deployed = fleet.tailnix("deploy", "-i", "inventory.py", env=env)

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert (
        f"{name}: delete the offline device {old['DNSName'].rstrip('.')} ({old['ID']}) through the Tailscale "
        f"API, so that the node joins as {name}"
    ) in dry.stdout

    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert (
        f"{name}: deleted the offline device {old['DNSName'].rstrip('.')} ({old['ID']}) through the Tailscale "
        f"API, so that the node joins as {name}"
    ) in deployed.stdout
    own = json.loads(lab.ssh(name, "tailscale status --json --peers=false").stdout)["Self"]
    assert own["DNSName"].startswith(f"{name}.")
    assert [n["ID"] for n in control.nodes() if n["HostName"] == name] == [own["ID"]]


@pytest.fixture(scope="module")
def reinstalled_beside_a_namesake(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with _reinstalled(lab, tmp_path_factory.mktemp("reinstall-namesake-fleet")) as fleet:
        yield fleet


def test_an_offline_device_recorded_as_another_hosts_node_is_never_deleted(
    reinstalled_beside_a_namesake: Fleet, lab: Lab
) -> None:
    """The offline device of the name is, by tailnix-nodes.json, another inventory host's node (a host of
    the same name that is off, say): it is left alone, and the node joins as NAME-1, which verify names."""
    fleet = reinstalled_beside_a_namesake
    name = fleet.hosts[0].name
    control = ControlPlane(lab.layout.control)
    (old,) = [n for n in control.nodes() if n["HostName"] == name]
    record = {"node_id": old["ID"], "hostname": name, "dns_name": old["DNSName"]}
    (fleet.directory / "tailnix-nodes.json").write_text(json.dumps({"schema": 1, "hosts": {"web": record}}))

    with TailscaleApi(lab.layout.control) as api:
        client_id, secret = api.add_client(())
        env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
        deployed = fleet.tailnix("deploy", "-i", "inventory.py", env=env)
        deletions = [r for r in api.requests if r.method == "DELETE"]

    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    assert (
        f"{name}: the offline device {old['DNSName'].rstrip('.')} ({old['ID']}) holds {name}, but it is web's "
        "node (tailnix-nodes.json): left alone"
    ) in deployed.stdout
    assert deletions == []
    assert old["ID"] in [n["ID"] for n in control.nodes()]
    own = json.loads(lab.ssh(name, "tailscale status --json --peers=false").stdout)["Self"]
    assert own["DNSName"].startswith(f"{name}-1.")
