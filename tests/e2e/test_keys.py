"""Keys over a fleet's life, end to end on lab hosts: rotation from cron before the key expires.

One fleet of one fresh host (reached as root), bootstrapped once; the tests run in the order of a
fleet's life, as in test_fleet.py, whose Fleet they use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix.sops import decrypt_value, read_metadata
from tailnix_lab.emulator.api import TailscaleApi
from tailnix_lab.emulator.control import ControlPlane, parse_auth_key
from tailnix_lab.hosts import Lab

from .test_fleet import Fleet, backend_state, new_fleet

pytestmark = pytest.mark.lab


def tagged_fleet(lab: Lab, directory: Path, env: dict[str, str] | None = None) -> tuple[Fleet, str]:
    """One fresh host with tag:server, bootstrapped and Running; the fleet and its first key."""
    hosts = [lab.add_host(os="nixos")]
    first_key = ControlPlane(lab.layout.control).mint_key(reusable=True, tags=("tag:server",))
    created = new_fleet(lab, directory, hosts, first_key)
    created.write_inventory(**{h.name: {"tailscale_advertise_tags": ["tag:server"]} for h in hosts})
    bootstrapped = created.tailnix("bootstrap", *(h.name for h in hosts), "-i", "inventory.py", env=env)
    assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
    return created, first_key


@pytest.fixture(scope="module")
def keys_fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fresh host, bootstrapped and Running with a key whose recorded expiry is 60 days away."""
    created, first_key = tagged_fleet(lab, tmp_path_factory.mktemp("keys-fleet"))
    recorded = created.tailnix("rotate-key", "-i", "inventory.py", "--days", "60", stdin=first_key)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


def _api_env(api: TailscaleApi) -> dict[str, str]:
    client_id, secret = api.add_client(("tag:server",))
    return {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}


CRON = ("rotate-key", "-i", "inventory.py", "--mint", "--tag", "tag:server", "--days", "90")


def test_if_expiring_within_without_mint_is_a_usage_error(keys_fleet: Fleet) -> None:
    before = keys_fleet.secrets.read_bytes()
    result = keys_fleet.tailnix("rotate-key", "-i", "inventory.py", "--if-expiring-within", "30")
    assert result.returncode == 2
    assert "--if-expiring-within goes with --mint" in result.stderr
    assert keys_fleet.secrets.read_bytes() == before


def test_a_key_far_from_expiry_is_left_alone(keys_fleet: Fleet) -> None:
    before = keys_fleet.secrets.read_bytes()
    expires = read_metadata(keys_fleet.secrets).unencrypted["tailscale_auth_key_expires_unencrypted"]
    with TailscaleApi(keys_fleet.lab.layout.control) as api:
        result = keys_fleet.tailnix(*CRON, "--if-expiring-within", "30", env=_api_env(api))
        asked = list(api.requests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"{keys_fleet.secrets}: the auth key expires on {expires}, in 60 days, more than 30: nothing to do"
    ]
    assert result.stderr == ""
    assert asked == []  # not even a token was asked for
    assert keys_fleet.secrets.read_bytes() == before


def test_a_key_within_the_window_is_minted_and_deployed(keys_fleet: Fleet) -> None:
    with TailscaleApi(keys_fleet.lab.layout.control) as api:
        result = keys_fleet.tailnix(*CRON, "--if-expiring-within", "60", env=_api_env(api))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].endswith("in 60 days, within 60: rotating")
    key = decrypt_value(
        keys_fleet.secrets, "tailscale_auth_key", age_key_file=keys_fleet.lab.layout.admin_agekey
    )
    assert key != keys_fleet.first_key
    parsed = parse_auth_key(key)
    assert parsed is not None
    record = ControlPlane(keys_fleet.lab.layout.control).key(parsed.key_id)
    assert record is not None and record["tags"] == ["tag:server"]
    for host in keys_fleet.hosts:
        assert f"{host.name}: ok, switched" in result.stdout
        assert backend_state(keys_fleet.lab, host.name) == "Running"


@pytest.fixture(scope="module")
def oauth_fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fresh host, recorded in .sops.yaml but not deployed to; the file holds an auth key."""
    directory = tmp_path_factory.mktemp("oauth-fleet")
    first_key = ControlPlane(lab.layout.control).mint_key(reusable=True)
    created = new_fleet(lab, directory, [lab.add_host(os="nixos")], first_key)
    created.write_inventory()
    recorded = created.tailnix(
        "bootstrap", *(h.name for h in created.hosts), "-i", "inventory.py", "--no-deploy"
    )
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


def test_a_fleet_joins_with_an_oauth_client_secret(oauth_fleet: Fleet) -> None:
    fleet, host = oauth_fleet, oauth_fleet.hosts[0]
    control = ControlPlane(fleet.lab.layout.control)
    with TailscaleApi(fleet.lab.layout.control) as api:
        _, client_secret = api.add_client(("tag:server",))
        secret = f"{client_secret}?ephemeral=false&preauthorized=true"
        stored = fleet.tailnix("rotate-key", "-i", "inventory.py", "--no-deploy", stdin=secret + "\n")
        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert "new OAuth client secret set on" in stored.stdout and "it does not expire" in stored.stdout
        assert read_metadata(fleet.secrets).unencrypted["tailscale_auth_key_expires_unencrypted"] == "never"
        checked = fleet.tailnix("check", "-i", "inventory.py")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "ok: the secret is an OAuth client secret: OAuth clients do not expire" in checked.stdout

        # Without tags the CLI would refuse it on the host: the deploy refuses before any host.
        refused = fleet.tailnix("deploy", "-i", "inventory.py")
        assert refused.returncode == 1
        assert f"host {host.name}: the secret 'tailscale_auth_key'" in refused.stdout + refused.stderr
        assert "tailscale_advertise_tags = []" in refused.stdout + refused.stderr
        assert (
            fleet.lab.ssh(host.name, "test -e /etc/nixos/tailscale-autoconnect.nix", check=False).returncode
            == 1
        )

        fleet.write_inventory(**{host.name: {"tailscale_advertise_tags": ["tag:server"]}})
        deployed = fleet.tailnix("deploy", "-i", "inventory.py")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert backend_state(fleet.lab, host.name) == "Running"
    # The host's tailscale exchanged the secret for a key of its own: single-use, tagged, not ephemeral.
    [node] = [n for n in control.nodes() if n["HostName"] == host.name]
    assert node["Tags"] == ["tag:server"] and not node["Ephemeral"]
    key = control.key(node["KeyID"])
    assert key is not None and not key["reusable"] and key["preauthorized"]
    assert [r.path for r in api.requests] == ["/api/v2/oauth/token", "/api/v2/tailnet/-/keys"]
    assert client_secret not in deployed.stdout + deployed.stderr


def _node_id(fleet: Fleet, name: str) -> str:
    [node] = [n for n in ControlPlane(fleet.lab.layout.control).nodes() if n["HostName"] == name]
    return str(node["ID"])


def test_status_shows_granted_tags_and_warns_before_the_node_key_expires(keys_fleet: Fleet) -> None:
    host = keys_fleet.hosts[0].name
    fine = keys_fleet.tailnix("status", "-i", "inventory.py", "--json")
    assert fine.returncode == 0, fine.stdout + fine.stderr
    [entry] = json.loads(fine.stdout)["hosts"]
    assert entry["tags"] == ["tag:server"] and entry["warnings"] == []
    assert entry["node_key_expiry"].endswith("Z")

    # The node key expires in 10 days, within the 14 of --warn-days.
    control = ControlPlane(keys_fleet.lab.layout.control)
    control.set_node_key_expiry(_node_id(keys_fleet, host), days_from_now=10)
    node = control.node(_node_id(keys_fleet, host))
    assert node is not None
    expiry = str(node["KeyExpiry"])
    warned = keys_fleet.tailnix("status", "-i", "inventory.py", "--json")
    assert warned.returncode == 0, warned.stdout + warned.stderr  # a warning, not a failure
    [entry] = json.loads(warned.stdout)["hosts"]
    assert entry["node_key_expiry"] == expiry and entry["healthy"] is True
    [warning] = entry["warnings"]
    assert warning.startswith(f"its node key expires on {expiry[:10]}, in ")
    assert warning.endswith(
        " days: the node will have to log in again (re-authenticate it, or disable key expiry for the device)"
    )

    table = keys_fleet.tailnix("status", "-i", "inventory.py", "--warn-days", "30")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "TAGS" in table.stdout.splitlines()[0] and "tag:server" in table.stdout
    assert f"{host}: warning: its node key expires on {expiry[:10]}" in table.stderr
    quiet = keys_fleet.tailnix("status", "-i", "inventory.py", "--warn-days", "5")
    assert "warning" not in quiet.stderr

    checked = keys_fleet.tailnix("check", "-i", "inventory.py", "--hosts")
    assert checked.returncode == 1
    assert f"warning: {host}: its node key expires on {expiry[:10]}" in checked.stderr
    offline = keys_fleet.tailnix("check", "-i", "inventory.py")
    assert offline.returncode == 0 and "node key" not in offline.stdout + offline.stderr


def test_a_device_whose_key_expiry_is_disabled_shows_never(keys_fleet: Fleet) -> None:
    host = keys_fleet.hosts[0].name
    ControlPlane(keys_fleet.lab.layout.control).set_key_expiry_disabled(_node_id(keys_fleet, host), True)
    try:
        result = keys_fleet.tailnix("status", "-i", "inventory.py", "--json")
        [entry] = json.loads(result.stdout)["hosts"]
        assert entry["node_key_expiry"] is None and entry["warnings"] == []
        table = keys_fleet.tailnix("status", "-i", "inventory.py")
        assert "never" in table.stdout.splitlines()[1]
    finally:
        ControlPlane(keys_fleet.lab.layout.control).set_key_expiry_disabled(_node_id(keys_fleet, host), False)
