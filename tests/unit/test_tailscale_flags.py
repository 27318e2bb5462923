"""The one table of tailscale up/set flags: the settings and the lab's tailscale read the same release."""

from __future__ import annotations

from tailnix.settings import _MANAGED_FLAGS
from tailnix.tailscale_flags import ALIASES, BY_NAME, SET_FLAGS, TAILSCALE_RELEASE, UP_FLAGS
from tailnix_lab.emulator import tailscale as emulated


def test_the_lab_cli_has_exactly_the_flags_of_the_table() -> None:
    assert [f.name for f in emulated.UP.flags] == [f.name for f in UP_FLAGS]
    assert [f.name for f in emulated.SET.flags] == [f.name for f in SET_FLAGS]
    assert emulated.VERSION == TAILSCALE_RELEASE


def test_the_lab_cli_knows_what_every_flag_does_to_prefs() -> None:
    names = {f.name for f in UP_FLAGS + SET_FLAGS}
    assert names == set(emulated.PREFS_OF_FLAG) | emulated.PREFLESS_FLAGS


def test_every_flag_tailnix_manages_is_a_flag_of_tailscale_up() -> None:
    for spelling in _MANAGED_FLAGS:
        name = spelling.removeprefix("--")
        assert BY_NAME[ALIASES.get(name, name)].up, spelling


def test_up_only_and_set_only_flags_of_1_90() -> None:
    up_only = {f.name for f in UP_FLAGS if not f.set}
    set_only = {f.name for f in SET_FLAGS if not f.up}
    assert set_only == {"nickname", "update-check", "auto-update", "webclient", "relay-server-port"}
    assert {"auth-key", "login-server", "advertise-tags", "force-reauth", "reset", "timeout"} <= up_only
    assert [f.name for f in UP_FLAGS if f.takes_value] == [
        "qr-format",
        "auth-key",
        "client-id",
        "client-secret",
        "id-token",
        "login-server",
        "exit-node",
        "advertise-tags",
        "hostname",
        "advertise-routes",
        "operator",
        "netfilter-mode",
        "timeout",
        "accept-risk",
    ]
