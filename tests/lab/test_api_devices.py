"""The lab's stand-in Tailscale API: the device calls, on the nodes the lab's daemons log in to.

Source for the paths and shapes: tailscale/tailscale `publicapi/device.md` (the device object: `nodeId`,
`id`, `addresses`, `name`, `hostname`, `keyExpiryDisabled`, `expires`, `authorized`, `tags`...; `GET
/api/v2/device/{deviceId}` with `?fields=all` for the routes; `POST .../tags` answering 400 `{"message":
"requested tags [tag:madeup tag:wrongexample] are invalid or not permitted"}`; `POST .../key` with
`keyExpiryDisabled`; `POST .../authorized`), `publicapi/tailnet.md` ("List tailnet devices": `GET
/api/v2/tailnet/{tailnet}/devices`, `-` for the token's tailnet, answering `{"devices": [...]}`). Scopes as
Tailscale's OpenAPI schema gives them: `devices:core:read` to list and read, `devices:core` to change a
device, `auth_keys` to mint keys. A call outside the OAuth
client's scopes is 403 `{"message": "calling actor does not have enough permissions to perform this
function"}` (tailscale/tailscale#15969, tailscale/github-action#301).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tailnix_lab.emulator.api import TailscaleApi
from tailnix_lab.emulator.control import ControlPlane

from .test_tailscale_emulator import Host, control, control_dir, host, key_file, make_host, self_of

__all__ = ["control", "control_dir", "host", "make_host"]  # fixtures used below


@pytest.fixture
def api(control_dir: Path) -> Iterator[TailscaleApi]:
    with TailscaleApi(control_dir) as running:
        yield running


@pytest.fixture
def tagged_host(host: Host, control: ControlPlane, tmp_path: Path) -> Host:
    host.start_and_settle()
    key = control.mint_key(tags=("tag:server",))
    result = host.tailscale("up", f"--auth-key={key_file(tmp_path, key)}", "--advertise-tags=tag:server")
    assert result.returncode == 0, result.stderr
    return host


def call(api: TailscaleApi, token: str, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """One API call with a bearer token: (HTTP status, decoded JSON answer)."""
    request = urllib.request.Request(
        api.url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def token_of(api: TailscaleApi, **client: Any) -> str:
    client_id, _ = api.add_client(**client)
    return api.issue_token(client_id)


def test_the_tailnet_lists_its_devices_in_the_apis_shape(tagged_host: Host, api: TailscaleApi) -> None:
    own = self_of(tagged_host.status())
    status, answer = call(api, token_of(api), "GET", "/api/v2/tailnet/-/devices")
    assert status == 200
    [device] = answer["devices"]
    assert device["nodeId"] == own["ID"]
    assert device["addresses"] == own["TailscaleIPs"]
    assert device["name"] == own["DNSName"].rstrip(".")
    assert device["hostname"] == "nixos-1"
    assert device["tags"] == ["tag:server"]
    assert device["user"] == "tagged-devices"
    assert device["expires"] == own["KeyExpiry"]
    assert (device["keyExpiryDisabled"], device["authorized"], device["isExternal"]) == (False, True, False)
    assert "advertisedRoutes" not in device  # only with ?fields=all


def test_one_device_by_its_node_id_or_its_legacy_id(tagged_host: Host, api: TailscaleApi) -> None:
    token = token_of(api)
    node_id = self_of(tagged_host.status())["ID"]
    status, device = call(api, token, "GET", f"/api/v2/device/{node_id}?fields=all")
    assert status == 200 and device["nodeId"] == node_id
    assert device["advertisedRoutes"] == [] and device["enabledRoutes"] == []
    assert call(api, token, "GET", f"/api/v2/device/{device['id']}")[1]["nodeId"] == node_id
    assert call(api, token, "GET", "/api/v2/device/nNoSuchCNTRL") == (404, {"message": "not found"})


def test_disabling_key_expiry_through_the_api_removes_it_from_the_hosts_status(
    tagged_host: Host, api: TailscaleApi
) -> None:
    token = token_of(api)
    node_id = self_of(tagged_host.status())["ID"]
    assert call(api, token, "POST", f"/api/v2/device/{node_id}/key", {"keyExpiryDisabled": True}) == (200, {})
    assert "KeyExpiry" not in self_of(tagged_host.status())
    assert call(api, token, "GET", f"/api/v2/device/{node_id}")[1]["keyExpiryDisabled"] is True


def test_tags_set_through_the_api_are_the_nodes_granted_tags(tagged_host: Host, api: TailscaleApi) -> None:
    token = token_of(api, tags=("tag:server", "tag:web"))
    node_id = self_of(tagged_host.status())["ID"]
    assert call(api, token, "POST", f"/api/v2/device/{node_id}/tags", {"tags": ["tag:web"]}) == (200, {})
    assert self_of(tagged_host.status())["Tags"] == ["tag:web"]
    assert tagged_host.status()["BackendState"] == "Running"


def test_a_tag_the_client_does_not_own_or_the_policy_does_not_know_is_refused(
    tagged_host: Host, api: TailscaleApi
) -> None:
    node_id = self_of(tagged_host.status())["ID"]
    token = token_of(api, tags=("tag:server",))
    path = f"/api/v2/device/{node_id}/tags"
    assert call(api, token, "POST", path, {"tags": ["tag:web"]}) == (
        400,
        {"message": "requested tags [tag:web] are invalid or not permitted"},
    )
    madeup = token_of(api, tags=("tag:server", "tag:madeup"))
    assert call(api, madeup, "POST", path, {"tags": ["tag:server", "tag:madeup"]}) == (
        400,
        {"message": "requested tags [tag:madeup] are invalid or not permitted"},
    )
    assert self_of(tagged_host.status())["Tags"] == ["tag:server"]


def test_authorizing_a_waiting_device_lets_it_run(
    host: Host, control: ControlPlane, api: TailscaleApi, tmp_path: Path
) -> None:
    control.set_device_approval(True)
    host.start_and_settle()
    key = control.mint_key(preauthorized=False)
    host.tailscale("up", f"--auth-key={key_file(tmp_path, key)}", "--timeout=0.1s")
    assert host.status()["BackendState"] == "NeedsMachineAuth"
    token = token_of(api)
    node_id = self_of(host.status())["ID"]
    assert call(api, token, "GET", f"/api/v2/device/{node_id}")[1]["authorized"] is False
    assert call(api, token, "POST", f"/api/v2/device/{node_id}/authorized", {"authorized": True}) == (200, {})
    assert host.status()["BackendState"] == "Running"


NOT_PERMITTED = {"message": "calling actor does not have enough permissions to perform this function"}


def test_calls_outside_the_clients_scopes_are_refused(tagged_host: Host, api: TailscaleApi) -> None:
    node_id = self_of(tagged_host.status())["ID"]
    key_path, list_path = f"/api/v2/device/{node_id}/key", "/api/v2/tailnet/-/devices"
    minting = token_of(api, scopes=("auth_keys",))
    assert call(api, minting, "GET", list_path) == (403, NOT_PERMITTED)
    assert call(api, minting, "POST", key_path, {"keyExpiryDisabled": True}) == (403, NOT_PERMITTED)
    reading = token_of(api, scopes=("devices:core:read",))
    assert call(api, reading, "GET", list_path)[0] == 200
    assert call(api, reading, "POST", key_path, {"keyExpiryDisabled": True}) == (403, NOT_PERMITTED)
    keys = {"capabilities": {"devices": {"create": {"tags": ["tag:server"]}}}, "expirySeconds": 3600}
    assert call(api, reading, "POST", "/api/v2/tailnet/-/keys", keys) == (403, NOT_PERMITTED)
    assert "KeyExpiry" in self_of(tagged_host.status())
    everything = token_of(api, scopes=("all",))
    assert call(api, everything, "POST", key_path, {"keyExpiryDisabled": True}) == (200, {})


def test_a_bad_token_is_refused_before_anything_is_read(tagged_host: Host, api: TailscaleApi) -> None:
    assert call(api, "tskey-api-nope", "GET", "/api/v2/tailnet/-/devices") == (
        401,
        {"message": "API token invalid"},
    )


def test_enabling_key_expiry_again_keeps_the_original_expiry(
    tagged_host: Host, api: TailscaleApi, control: ControlPlane
) -> None:
    """`publicapi/device.md`: with expiry disabled "the original key expiry time is still maintained.
    Upon re-enabling, the key will expire at that original time" (and may have expired: NeedsLogin)."""
    token = token_of(api)
    node_id = self_of(tagged_host.status())["ID"]
    original = self_of(tagged_host.status())["KeyExpiry"]
    assert call(api, token, "POST", f"/api/v2/device/{node_id}/key", {"keyExpiryDisabled": True})[0] == 200
    assert call(api, token, "GET", f"/api/v2/device/{node_id}")[1]["expires"] == original
    control.age_node_keys(days=365)
    assert tagged_host.status()["BackendState"] == "Running"
    assert call(api, token, "POST", f"/api/v2/device/{node_id}/key", {"keyExpiryDisabled": False})[0] == 200
    assert tagged_host.status()["BackendState"] == "NeedsLogin"


def test_routes_carry_traffic_once_approved_through_the_api(tagged_host: Host, api: TailscaleApi) -> None:
    """`publicapi/device.md`, "Set device routes": `POST /api/v2/device/{id}/routes` `{"routes": [...]}`
    answers `{"advertisedRoutes", "enabledRoutes"}`; the node's own status (`peerStatusFromNode`,
    `ipn/ipnlocal/local.go`) then has the route in `AllowedIPs` and `PrimaryRoutes`, the exit routes as
    `ExitNodeOption`."""
    set_routes = tagged_host.tailscale("set", "--advertise-routes=192.168.7.0/24", "--advertise-exit-node")
    assert set_routes.returncode == 0, set_routes.stderr
    token = token_of(api)
    own = self_of(tagged_host.status())
    assert "PrimaryRoutes" not in own and own["ExitNodeOption"] is False
    path = f"/api/v2/device/{own['ID']}/routes"
    advertised = ["0.0.0.0/0", "::/0", "192.168.7.0/24"]
    assert call(api, token, "GET", path) == (200, {"advertisedRoutes": advertised, "enabledRoutes": []})

    status, answer = call(api, token, "POST", path, {"routes": ["192.168.7.0/24"]})
    assert (status, answer["enabledRoutes"]) == (200, ["192.168.7.0/24"])
    own = self_of(tagged_host.status())
    assert own["PrimaryRoutes"] == ["192.168.7.0/24"] and "192.168.7.0/24" in own["AllowedIPs"]
    assert own["ExitNodeOption"] is False

    status, answer = call(api, token, "POST", path, {"routes": advertised})
    assert status == 200 and self_of(tagged_host.status())["ExitNodeOption"] is True
    assert call(api, token, "POST", path, {"routes": ["10.0.0.1/8x"]})[0] == 400


def test_the_policys_auto_approvers_approve_routes_inside_their_prefix(tagged_host: Host) -> None:
    """The lab policy's `autoApprovers` (tailscale.com/kb/1337): `10.0.0.0/8` for tag:server, no exit node;
    a route inside the prefix is approved when the node advertises it, one outside is not."""
    set_routes = tagged_host.tailscale("set", "--advertise-routes=10.20.0.0/24,172.16.0.0/12")
    assert set_routes.returncode == 0, set_routes.stderr
    own = self_of(tagged_host.status())
    assert own["PrimaryRoutes"] == ["10.20.0.0/24"]
    assert "172.16.0.0/12" not in own["AllowedIPs"]


def test_an_approval_outlives_the_advertisement_until_the_api_withdraws_it(
    tagged_host: Host, api: TailscaleApi
) -> None:
    """`publicapi/device.md`, "Subnet routes": advertising and enabling are two independent steps ("if a
    tailnet admin pre-approves certain routes by enabling them, they are not available for routing until
    the device in question has advertised them"), so `GET .../routes` lists an approved route among
    `enabledRoutes` after the node stopped advertising it (the admin console keeps it too:
    tailscale/tailscale#3825), and the node serves it again as soon as it advertises it again. Only a
    `POST .../routes` without it (the list replaces the enabled routes) withdraws the approval."""
    both, kept, dropped = (
        "--advertise-routes=192.168.7.0/24,192.168.8.0/24",
        "192.168.7.0/24",
        "192.168.8.0/24",
    )
    token = token_of(api)
    path = f"/api/v2/device/{self_of(tagged_host.status())['ID']}/routes"
    assert tagged_host.tailscale("set", both).returncode == 0
    assert call(api, token, "POST", path, {"routes": [kept, dropped]})[0] == 200

    assert tagged_host.tailscale("set", f"--advertise-routes={kept}").returncode == 0
    assert call(api, token, "GET", path) == (
        200,
        {"advertisedRoutes": [kept], "enabledRoutes": [kept, dropped]},
    )
    assert self_of(tagged_host.status())["PrimaryRoutes"] == [kept]
    assert tagged_host.tailscale("set", both).returncode == 0
    assert self_of(tagged_host.status())["PrimaryRoutes"] == [kept, dropped]  # no new approval needed

    assert tagged_host.tailscale("set", f"--advertise-routes={kept}").returncode == 0
    assert call(api, token, "POST", path, {"routes": [kept]}) == (
        200,
        {"advertisedRoutes": [kept], "enabledRoutes": [kept]},
    )
    assert tagged_host.tailscale("set", both).returncode == 0
    own = self_of(tagged_host.status())
    assert own["PrimaryRoutes"] == [kept] and dropped not in own["AllowedIPs"]
