"""What the plan says of a Running node that must log in again, and how a refused login is told."""

from __future__ import annotations

from typing import Any

from tailnix.reauth import headscale_retag, reauthentication
from tailnix.settings import parse_settings


def _settings(**data: Any) -> Any:
    return parse_settings("desk", {"tailnix_secrets_file": "/fleet/secrets/tailscale.yaml", **data})


def _running(*tags: str, health: tuple[str, ...] = (), backend: str = "Running") -> dict[str, Any]:
    return {"BackendState": backend, "Self": {"HostName": "desk", "Tags": list(tags)}, "Health": list(health)}


DEFAULT_PREFS = {"ControlURL": "https://controlplane.tailscale.com"}


def test_other_tags_are_a_re_authentication_from_the_granted_ones() -> None:
    needed = reauthentication(
        _settings(tailscale_advertise_tags=["tag:web"]), _running("tag:server"), DEFAULT_PREFS
    )
    assert needed is not None and needed.change == "tags tag:server -> tag:web"


def test_the_same_tags_in_another_order_need_nothing() -> None:
    settings = _settings(tailscale_advertise_tags=["tag:web", "tag:server"])
    assert reauthentication(settings, _running("tag:server", "tag:web"), DEFAULT_PREFS) is None


def test_a_node_that_is_not_running_logs_in_anyway_and_needs_no_re_authentication() -> None:
    settings = _settings(tailscale_advertise_tags=["tag:web"])
    assert reauthentication(settings, _running(backend="NeedsLogin"), DEFAULT_PREFS) is None
    assert reauthentication(settings, None, None) is None


def test_another_login_server_is_a_re_authentication_and_the_saas_names_are_one() -> None:
    moved = reauthentication(
        _settings(tailscale_login_server="https://headscale.example.com"), _running(), DEFAULT_PREFS
    )
    assert moved is not None
    assert moved.change == "login server https://controlplane.tailscale.com -> https://headscale.example.com"
    login = {"ControlURL": "https://login.tailscale.com"}
    assert reauthentication(_settings(), _running(), login) is None


def test_a_refused_tag_is_told_with_the_host_the_tag_and_the_control_words() -> None:
    needed = reauthentication(
        _settings(tailscale_advertise_tags=["tag:db"]), _running("tag:web"), DEFAULT_PREFS
    )
    assert needed is not None
    refused = _running(
        backend="NeedsLogin",
        health=(
            "You are logged out. The last login error was: requested tags [tag:db] are invalid or not permitted",
        ),
    )
    assert needed.refusal(refused) == (
        "control refused to log desk in again with tag:db: requested tags [tag:db] are invalid or not permitted"
    )
    assert needed.refusal(_running("tag:db")) is None
    assert (
        needed.refusal(_running("tag:web")) == "control did not grant desk tag:db (the node carries tag:web)"
    )
    assert needed.refusal(_running("tag:db", backend="Starting")) == (
        "desk is Starting, not Running, after logging in again with tag:db"
    )


def test_tags_a_tagged_key_adds_are_told_as_the_key_s() -> None:
    needed = reauthentication(
        _settings(tailscale_advertise_tags=["tag:web"]), _running("tag:server"), DEFAULT_PREFS
    )
    assert needed is not None
    assert needed.refusal(_running("tag:server", "tag:web")) == (
        "desk logged in again with tag:server,tag:web, not tag:web: its auth key carries tag:server; "
        "use a key without them (or with the new tags)"
    )


HEADSCALE = "https://headscale.example.com"


def test_a_tag_change_on_headscale_is_a_retag_on_the_server_not_a_new_login() -> None:
    """headscale v0.29.2 `hscontrol/state/state.go` (`HandleNodeFromPreAuthKey`): a node it knows keeps its tags
    when it logs in again; `cmd/headscale/cli/nodes.go` `tag -i ID -t TAGS` replaces them. headscale's node ID
    is the node's StableID, `Self.ID` of `tailscale status --json`."""
    status = _running("tag:server")
    status["Self"]["ID"] = "7"
    settings = _settings(tailscale_advertise_tags=["tag:web", "tag:db"], tailscale_login_server=HEADSCALE)
    assert reauthentication(settings, status, {"ControlURL": HEADSCALE}) is None
    retag = headscale_retag(settings, status, {"ControlURL": HEADSCALE})
    assert retag is not None and retag.change == "tags tag:server -> tag:db,tag:web"
    assert retag.argv == ["headscale", "nodes", "tag", "-i", "7", "-t", "tag:db,tag:web"]
    assert retag.refusal() == (
        f"desk: its tags cannot change from tag:server to tag:db,tag:web by logging in again on {HEADSCALE}: "
        "headscale gives a node the tags of its pre-auth key and keeps them at every new login. On the "
        "headscale server run: headscale nodes tag -i 7 -t tag:db,tag:web; then deploy again (`tailnix deploy` "
        "runs it itself when tailnix_headscale_host names that server)"
    )


def test_without_a_numeric_node_id_the_headscale_command_says_where_to_find_it() -> None:
    retag = headscale_retag(
        _settings(tailscale_advertise_tags=["tag:web"], tailscale_login_server=HEADSCALE),
        _running(),
        {"ControlURL": HEADSCALE},
    )
    assert retag is not None
    assert "headscale nodes tag -i <ID> -t tag:web (the node's ID: `headscale nodes list`)" in retag.refusal()


def test_on_headscale_unset_tags_or_the_same_ones_need_no_retag() -> None:
    prefs = {"ControlURL": HEADSCALE}
    assert headscale_retag(_settings(tailscale_login_server=HEADSCALE), _running("tag:server"), prefs) is None
    same = _settings(tailscale_advertise_tags=["tag:web", "tag:server"], tailscale_login_server=HEADSCALE)
    assert headscale_retag(same, _running("tag:server", "tag:web"), prefs) is None
    new = _settings(tailscale_advertise_tags=["tag:web"], tailscale_login_server=HEADSCALE)
    assert headscale_retag(new, _running(backend="NeedsLogin"), prefs) is None


def test_tailscale_s_own_control_server_and_a_login_server_move_are_not_headscale_retags() -> None:
    on_saas = _settings(tailscale_advertise_tags=["tag:web"])
    assert headscale_retag(on_saas, _running("tag:server"), DEFAULT_PREFS) is None
    moving = _settings(tailscale_login_server=HEADSCALE, tailscale_advertise_tags=["tag:web"])
    assert headscale_retag(moving, _running(), DEFAULT_PREFS) is None
    # The move is a new login that keeps whatever tags the headscale key gives.
    needed = reauthentication(moving, _running(), DEFAULT_PREFS)
    assert needed is not None
    assert needed.change == f"login server https://controlplane.tailscale.com -> {HEADSCALE}"
    assert needed.refusal({"BackendState": "Running", "Self": {"Tags": ["tag:server"]}}) is None
