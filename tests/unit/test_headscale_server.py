"""Which headscale server `rotate-key --mint` mints on, from the chosen hosts' settings, and what it refuses."""

from __future__ import annotations

import pytest

from tailnix.fleet import FleetHost
from tailnix.headscale import HeadscaleServer, headscale_server, without_servers
from tailnix.mint import MintError

SERVER = "https://headscale.example.com"
ON_HEADSCALE = {
    "tailscale_login_server": SERVER,
    "tailnix_headscale_host": "hs",
    "tailnix_headscale_user": "fleet",
}
HS = FleetHost("hs", ("servers",), {})


def _host(name: str, **data: object) -> FleetHost:
    return FleetHost(name, ("fleet",), {k: v for k, v in {**ON_HEADSCALE, **data}.items() if v is not None})


def test_hosts_on_tailscale_s_server_mint_through_the_api() -> None:
    plain = FleetHost("web-1", ("fleet",), {})
    assert headscale_server([plain], [plain]) is None


def test_hosts_that_agree_name_the_server_host_and_user() -> None:
    hosts = [_host("web-1"), _host("web-2")]
    assert headscale_server(hosts, [*hosts, HS]) == HeadscaleServer("hs", "fleet", SERVER)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (
            {"tailscale_login_server": None},
            f"tailscale_login_server differs between the hosts (web-1: '{SERVER}'; web-2: not set)",
        ),
        (
            {"tailnix_headscale_user": "ops"},
            "tailnix_headscale_user differs between the hosts (web-1: 'fleet'; web-2: 'ops')",
        ),
    ],
)
def test_hosts_that_disagree_are_named_with_their_values(other: dict[str, object], message: str) -> None:
    hosts = [_host("web-1"), _host("web-2", **other)]
    with pytest.raises(MintError) as refused:
        headscale_server(hosts, [*hosts, HS])
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"tailnix_headscale_host": None},
            f"tailscale_login_server = '{SERVER}', and there is no tailnix_headscale_host",
        ),
        (
            {"tailnix_headscale_host": "hs-9"},
            "tailnix_headscale_host = 'hs-9': not a host of the inventory (hosts: web-1, hs)",
        ),
        (
            {"tailnix_headscale_user": None},
            "tailnix_headscale_user = None: give the headscale user (by name)",
        ),
    ],
)
def test_a_missing_or_unknown_setting_is_named_with_its_value(data: dict[str, object], message: str) -> None:
    host = _host("web-1", **data)
    with pytest.raises(MintError) as refused:
        headscale_server([host], [host, HS])
    assert message in str(refused.value)


def test_the_headscale_host_is_left_out_of_the_key_and_the_deploy() -> None:
    """`rotate-key --mint` over the whole inventory: the server is no node; a node named as server stays."""
    hosts = [_host("web-1"), _host("web-2")]
    assert without_servers([*hosts, HS], [*hosts, HS]) == hosts
    node_and_server = FleetHost("hs", ("fleet",), dict(ON_HEADSCALE))
    assert without_servers([*hosts, node_and_server], [*hosts, node_and_server]) == [*hosts, node_and_server]
    assert headscale_server(without_servers([*hosts, HS], [*hosts, HS]), [*hosts, HS]) == HeadscaleServer(
        "hs", "fleet", SERVER
    )
