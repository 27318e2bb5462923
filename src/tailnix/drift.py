"""How a node's prefs differ from what its settings make of them, and what the next deploy does about it.

The join unit brings a node to its settings with `tailscale up --reset` and the settings' flags. With
`--reset`, `up` sets every pref an `up` flag governs (`cmd/tailscale/cli/up.go`, tailscale v1.90.6:
`updatePrefs` visits all of up's flags, `prefsOfFlag` names their prefs), to the flag's value or its
default: a pref set by hand on the host (`tailscale set --exit-node=...`, `--operator=...`) that the
settings do not name is cleared. Prefs of `set`-only flags (the web client, auto-update) are kept.

`wanted_prefs` is the one mapping of settings to prefs: verify compares the prefs the settings name, and
the drift plan (`deploy --dry`, `status`) every pref `up --reset` would set.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from tailnix.settings import TailscaleSettings
from tailnix.tailscale_flags import (
    ALIASES,
    BOOL_VALUES,
    BY_NAME,
    NETFILTER_MODES,
    TAILSCALE_CONTROL_URLS,
    UP_FLAGS,
)

EXIT_ROUTES = ("0.0.0.0/0", "::/0")

# The settings that always name their flag's prefs (tailnix passes these flags on every `up`); the
# hostname and the login server name theirs only when they are set (unset, `up --reset` clears them).
_ALWAYS_NAMED = {
    "accept-routes": "tailscale_accept_routes",
    "advertise-routes": "tailscale_advertise_routes",
    "advertise-exit-node": "tailscale_advertise_exit_node",
    "advertise-tags": "tailscale_advertise_tags",
    "ssh": "tailscale_ssh",
}
_NAMED_WHEN_SET = {"hostname": "tailscale_hostname", "login-server": "tailscale_login_server"}


@dataclass(frozen=True)
class WantedPref:
    """The value `tailscale up --reset` with a host's flags gives one pref, and the setting behind it."""

    value: Any
    setting: str | None
    """The setting that names this pref; None when the settings leave it at `up`'s default."""


def _flag_values(settings: TailscaleSettings) -> tuple[dict[str, Any], set[str]]:
    """Every `up` flag's value for these settings (its default unless given), and the flags given."""
    values: dict[str, Any] = {f.name: f.default for f in UP_FLAGS}
    given: set[str] = set()
    for flag in settings.up_flags():
        written, has_value, value = flag[2:].partition("=")
        name = ALIASES.get(written, written)
        spec = BY_NAME[name]
        if spec.takes_value:
            values[name] = value
        else:
            values[name] = BOOL_VALUES.get(value, False) if has_value else True
        given.add(name)
    return values, given


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def wanted_prefs(settings: TailscaleSettings) -> dict[str, WantedPref]:
    """The prefs `tailscale up --reset` with these settings' flags sets, by pref name (`AppConnector.Advertise`).

    A pref whose value cannot be known here is left out: an exit node named by its node name (the daemon
    resolves it to an IP).
    """
    values, given = _flag_values(settings)

    def setting(flag: str) -> str | None:
        if flag in _ALWAYS_NAMED:
            return _ALWAYS_NAMED[flag]
        if flag in given:
            return _NAMED_WHEN_SET.get(flag, "tailscale_extra_up_flags")
        return None

    routes = [r for r in str(values["advertise-routes"]).split(",") if r]
    if values["advertise-exit-node"]:
        routes += EXIT_ROUTES
    exit_node = str(values["exit-node"])
    if not exit_node:
        exit_prefs = {"ExitNodeID": WantedPref("", None), "ExitNodeIP": WantedPref("", None)}
    elif _is_ip(exit_node):
        exit_prefs = {"ExitNodeIP": WantedPref(exit_node, setting("exit-node"))}
    else:
        exit_prefs = {}
    # In the order of ipn.Prefs' fields (ipn/prefs.go).
    return {
        "ControlURL": WantedPref(values["login-server"], setting("login-server")),
        "RouteAll": WantedPref(values["accept-routes"], setting("accept-routes")),
        **exit_prefs,
        "ExitNodeAllowLANAccess": WantedPref(
            values["exit-node-allow-lan-access"], setting("exit-node-allow-lan-access")
        ),
        "CorpDNS": WantedPref(values["accept-dns"], setting("accept-dns")),
        "RunSSH": WantedPref(values["ssh"], setting("ssh")),
        "ShieldsUp": WantedPref(values["shields-up"], setting("shields-up")),
        "AdvertiseTags": WantedPref(sorted(settings.requested_tags), setting("advertise-tags")),
        "Hostname": WantedPref(values["hostname"], setting("hostname")),
        "AdvertiseRoutes": WantedPref(
            sorted(set(routes)), setting("advertise-routes") or setting("advertise-exit-node")
        ),
        "NoSNAT": WantedPref(not values["snat-subnet-routes"], setting("snat-subnet-routes")),
        "NoStatefulFiltering": WantedPref(not values["stateful-filtering"], setting("stateful-filtering")),
        "NetfilterMode": WantedPref(
            NETFILTER_MODES.get(str(values["netfilter-mode"])), setting("netfilter-mode")
        ),
        "OperatorUser": WantedPref(values["operator"], setting("operator")),
        "AppConnector.Advertise": WantedPref(values["advertise-connector"], setting("advertise-connector")),
        "PostureChecking": WantedPref(values["report-posture"], setting("report-posture")),
    }


def _pref(prefs: dict[str, Any], dotted: str) -> Any:
    value: Any = prefs
    for name in dotted.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _same(pref: str, actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, list):
        return sorted(actual or []) == wanted
    if pref == "ControlURL":
        return (actual in TAILSCALE_CONTROL_URLS and wanted in TAILSCALE_CONTROL_URLS) or actual == wanted
    return bool(actual == wanted)


def shown(value: Any) -> str:
    """A pref's value as a person reads it: `true`, `100.64.0.9`, `tag:a,tag:b`, `""`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    if value == "":
        return '""'
    return str(value)


@dataclass(frozen=True)
class PrefDrift:
    """One pref whose value on the node is not what the host's settings make of it."""

    pref: str
    value: Any
    """What the node has (`tailscale debug prefs`)."""
    wanted: Any
    """What `tailscale up --reset` with the settings' flags gives it."""
    setting: str | None
    """The setting that names the pref; None for a pref the settings leave alone (set by hand)."""

    @property
    def by_hand(self) -> bool:
        """The settings do not name this pref: it was set on the host, and `up --reset` undoes it."""
        return self.setting is None

    @property
    def mismatch(self) -> str:
        """Verify's sentence for a pref the settings name."""
        return f"{self.pref} is {self.value!r}, the settings want {self.wanted!r}"

    @property
    def described(self) -> str:
        """`ExitNodeIP 100.64.0.9 (set by hand)`, or `RouteAll false (tailscale_accept_routes wants true)`."""
        if self.by_hand:
            return f"{self.pref} {shown(self.value)} (set by hand)"
        return f"{self.pref} {shown(self.value)} ({self.setting} wants {shown(self.wanted)})"

    @property
    def undone(self) -> str:
        """What `up --reset` does to it: `cleared`, or `set back to true`, or `set to ...`."""
        if self.by_hand and self.wanted in ("", False, [], None):
            return "cleared"
        return f"set {'back ' if self.by_hand else ''}to {shown(self.wanted)}"

    def to_json(self) -> dict[str, Any]:
        """The entry of `tailnix status --json`'s `drift` list."""
        return {"pref": self.pref, "value": self.value, "wanted": self.wanted, "setting": self.setting}


def prefs_drift(settings: TailscaleSettings, prefs: dict[str, Any]) -> list[PrefDrift]:
    """The prefs of the node (`tailscale debug prefs`) that `up --reset` with these settings would change."""
    drift = []
    for pref, wanted in wanted_prefs(settings).items():
        actual = _pref(prefs, pref)
        if actual is None and not isinstance(wanted.value, list):
            continue  # a pref this tailscale does not have, or not reported
        if pref == "NoStatefulFiltering":
            # An opt.Bool: JSON true, false or null (unset: the daemon decides); read as a string too.
            if actual in ("", None):
                continue
            actual = actual in (True, "true")
        if not _same(pref, actual, wanted.value):
            drift.append(
                PrefDrift(
                    pref, sorted(actual) if isinstance(actual, list) else actual, wanted.value, wanted.setting
                )
            )
    return drift


KEEP_A_PREF = "to keep a pref set by hand, make it a setting (tailscale_extra_up_flags)"


def drift_plan(drift: list[PrefDrift], *, undone_by: str | None, kept_because: str = "") -> str:
    """The plan's sentence for a host's drift: what undoes it, or (undone_by None) why it is kept.

    `drift: ExitNodeIP 100.64.0.9 (set by hand) would be cleared by the deploy; ...`
    """
    if undone_by is not None:
        sentence = "drift: " + "; ".join(f"{d.described} would be {d.undone} by {undone_by}" for d in drift)
    else:
        sentence = f"drift: {', '.join(d.described for d in drift)}: kept, {kept_because}"
    if any(d.by_hand for d in drift):
        sentence += f" ({KEEP_A_PREF})"
    return sentence


def status_sentence(entries: list[dict[str, Any]]) -> str:
    """`tailnix status`'s line for a host's `drift` entries (their JSON form)."""
    drift = [PrefDrift(e["pref"], e["value"], e["wanted"], e["setting"]) for e in entries]
    sentence = (
        f"drift: {', '.join(d.described for d in drift)}: the next switch's `tailscale up --reset` "
        "sets them as the settings say"
    )
    if any(d.by_hand for d in drift):
        sentence += f" ({KEEP_A_PREF})"
    return sentence
