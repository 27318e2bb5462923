"""The drift of a node's prefs from its settings: what the join unit's `tailscale up --reset` would change.

Read in tailscale v1.90.6, `cmd/tailscale/cli/up.go`: with `--reset`, `updatePrefs` visits ALL of up's
flags (`env.flagSet.VisitAll`) and `updateMaskedPrefsFromUpOrSetFlag` marks each flag's prefs
(`prefsOfFlag`) for the edit, so a pref of an `up` flag not given goes back to the flag's default
(`prefsFromUpArgs` starts from `ipn.NewPrefs()`); prefs of `set`-only flags (`--webclient`,
`--auto-update`) are not touched. `ipn/prefs.go` names the fields (`ExitNodeIP`, `OperatorUser`, ...).
"""

from __future__ import annotations

from typing import Any

import pytest

from tailnix.drift import drift_plan, prefs_drift, wanted_prefs
from tailnix.settings import parse_settings
from tailnix.tailscale_flags import PREFS_OF_FLAG, UP_FLAGS
from tailnix_lab.emulator import tailscaled


def _running_prefs(**changes: Any) -> dict[str, Any]:
    """The prefs of a node brought up by tailnix with default settings (`up --reset --accept-routes`)."""
    prefs = tailscaled.default_prefs()
    prefs.update(ControlURL="https://controlplane.tailscale.com", WantRunning=True, RouteAll=True)
    prefs.update(changes)
    return prefs


def _drift(data: dict[str, Any], **changes: Any) -> list[str]:
    settings = parse_settings("desk", data)
    return [d.described for d in prefs_drift(settings, _running_prefs(**changes))]


def test_every_pref_of_an_up_flag_is_in_the_mapping() -> None:
    governed = {p for f in UP_FLAGS for p in PREFS_OF_FLAG.get(f.name, ())}
    wanted = set(wanted_prefs(parse_settings("desk", {})))
    assert {p.split(".")[0] for p in wanted} == governed


def test_a_node_as_tailnix_left_it_has_no_drift() -> None:
    assert _drift({}) == []


@pytest.mark.parametrize(
    ("changes", "described"),
    [
        ({"ExitNodeIP": "100.64.0.9"}, "ExitNodeIP 100.64.0.9 (set by hand)"),
        ({"OperatorUser": "alice"}, "OperatorUser alice (set by hand)"),
        ({"ShieldsUp": True}, "ShieldsUp true (set by hand)"),
        ({"CorpDNS": False}, "CorpDNS false (set by hand)"),
        ({"Hostname": "other"}, "Hostname other (set by hand)"),
        ({"NetfilterMode": 0}, "NetfilterMode 0 (set by hand)"),
        ({"AppConnector": {"Advertise": True}}, "AppConnector.Advertise true (set by hand)"),
        ({"RouteAll": False}, "RouteAll false (tailscale_accept_routes wants true)"),
        (
            {"AdvertiseRoutes": ["10.0.0.0/24"]},
            "AdvertiseRoutes 10.0.0.0/24 (tailscale_advertise_routes wants none)",
        ),
    ],
)
def test_a_pref_set_by_hand_is_drift(changes: dict[str, Any], described: str) -> None:
    assert _drift({}, **changes) == [described]


def test_set_only_prefs_are_no_drift() -> None:
    """`up --reset` keeps what only `tailscale set` changes (the web client, auto-update)."""
    assert _drift({}, RunWebClient=True, AutoUpdate={"Check": False, "Apply": True}) == []


def test_a_pref_the_settings_name_in_extra_flags_is_no_drift_once_there() -> None:
    data = {"tailscale_extra_up_flags": ["--operator=alice", "--exit-node=100.64.0.9", "--accept-dns=false"]}
    assert _drift(data, OperatorUser="alice", ExitNodeIP="100.64.0.9", CorpDNS=False) == []
    assert _drift(data) == [
        'ExitNodeIP "" (tailscale_extra_up_flags wants 100.64.0.9)',
        "CorpDNS true (tailscale_extra_up_flags wants false)",
        'OperatorUser "" (tailscale_extra_up_flags wants alice)',
    ]


def test_the_legacy_control_url_is_the_default_one() -> None:
    assert _drift({}, ControlURL="https://login.tailscale.com") == []


def test_the_plan_says_what_the_deploy_clears_or_why_it_keeps_it() -> None:
    settings = parse_settings("desk", {})
    drift = prefs_drift(
        settings, _running_prefs(ExitNodeIP="100.64.0.9", OperatorUser="alice", CorpDNS=False)
    )
    assert drift_plan(drift, undone_by="the deploy") == (
        "drift: ExitNodeIP 100.64.0.9 (set by hand) would be cleared by the deploy; "
        "CorpDNS false (set by hand) would be set back to true by the deploy; "
        "OperatorUser alice (set by hand) would be cleared by the deploy "
        "(to keep a pref set by hand, make it a setting (tailscale_extra_up_flags))"
    )
    assert drift_plan([drift[0], drift[2]], undone_by=None, kept_because="since nothing needs a switch") == (
        "drift: ExitNodeIP 100.64.0.9 (set by hand), OperatorUser alice (set by hand): kept, since nothing "
        "needs a switch (to keep a pref set by hand, make it a setting (tailscale_extra_up_flags))"
    )
