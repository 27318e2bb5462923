"""`tailscale_key_expiry = False`: the deploy disables the node key expiry of the device through the API.

Source: tailscale/tailscale `publicapi/device.md`, "Update device key": `POST /api/v2/device/{deviceID}/key`
with `{"keyExpiryDisabled": true}`, 2xx with `{}`; the device is the `nodeId`, which a host reports as
`Self.ID` in `tailscale status --json` (`ipn/ipnstate/ipnstate.go`, where `KeyExpiry` is omitted once
expiry is disabled). The call needs an OAuth client with the `devices:core` scope.

One fresh tagged host, bootstrapped once; the tests run in order: without a client, then with one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tailnix_lab.emulator.api import TailscaleApi
from tailnix_lab.hosts import Lab

from .test_fleet import Fleet
from .test_keys import tagged_fleet

pytestmark = pytest.mark.lab

NO_CLIENT = {"TS_API_CLIENT_ID": "", "TS_API_CLIENT_SECRET": "", "TS_BASE_URL": ""}


@pytest.fixture(scope="module")
def no_expiry_fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fresh host joined with tag:server, then set to `tailscale_key_expiry = False`."""
    created, _ = tagged_fleet(lab, tmp_path_factory.mktemp("no-expiry-fleet"), env=NO_CLIENT)
    created.write_inventory(
        **{
            h.name: {"tailscale_advertise_tags": ["tag:server"], "tailscale_key_expiry": False}
            for h in created.hosts
        }
    )
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


def _status_entry(fleet: Fleet) -> dict[str, object]:
    result = fleet.tailnix("status", "-i", "inventory.py", "--json")
    [entry] = json.loads(result.stdout)["hosts"]
    assert isinstance(entry, dict)
    return entry


def test_without_an_oauth_client_the_deploy_says_what_is_needed(no_expiry_fleet: Fleet) -> None:
    host = no_expiry_fleet.hosts[0].name
    planned = no_expiry_fleet.tailnix("deploy", "-i", "inventory.py", "--dry", env=NO_CLIENT)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert (
        f"{host}: disable its node key expiry through the Tailscale API (tailscale_key_expiry = False)"
        in planned.stdout
    )
    deployed = no_expiry_fleet.tailnix("deploy", "-i", "inventory.py", env=NO_CLIENT)
    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    assert (
        f"{host}: tailscale_key_expiry = False, but its node key still expires: disabling that needs the "
        "Tailscale API: set $TS_API_CLIENT_ID and $TS_API_CLIENT_SECRET (an OAuth client with the devices:core "
        "scope), or give --oauth-file"
    ) in deployed.stderr
    entry = _status_entry(no_expiry_fleet)
    assert entry["backend_state"] == "Running" and isinstance(entry["node_key_expiry"], str)


def test_the_deploy_disables_node_key_expiry_and_status_shows_never(no_expiry_fleet: Fleet) -> None:
    host = no_expiry_fleet.hosts[0].name
    with TailscaleApi(no_expiry_fleet.lab.layout.control) as api:
        client_id, secret = api.add_client(("tag:server",))
        env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
        deployed = no_expiry_fleet.tailnix("deploy", "-i", "inventory.py", env=env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert f"{host}: node key expiry disabled through {api.url}" in deployed.stdout
        assert secret not in deployed.stdout + deployed.stderr
        entry = _status_entry(no_expiry_fleet)
        assert entry["backend_state"] == "Running" and entry["node_key_expiry"] is None
        table = no_expiry_fleet.tailnix("status", "-i", "inventory.py")
        assert table.stdout.splitlines()[1].rstrip().endswith("never")

        # Once disabled, a deploy leaves it alone: no API call at all.
        calls = len(api.requests)
        again = no_expiry_fleet.tailnix("deploy", "-i", "inventory.py", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(api.requests) == calls
    # ...and needs no client then.
    without = no_expiry_fleet.tailnix("deploy", "-i", "inventory.py", env=NO_CLIENT)
    assert without.returncode == 0, without.stdout + without.stderr
    planned = no_expiry_fleet.tailnix("deploy", "-i", "inventory.py", "--dry", env=NO_CLIENT)
    assert f"{host}: nothing to do" in planned.stdout
