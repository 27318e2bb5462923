"""The flags of `tailscale up` and `tailscale set` in the one Tailscale release tailnix is pinned to.

Read from tailscale v1.90.6 for Linux: `cmd/tailscale/cli/up.go` (`newUpFlagSet`), `set.go`
(`newSetFlagSet`), `risks.go` (`registerAcceptRiskFlag`) and `cli.go` (`CleanUpArgs`). The 1.90.7 to
1.90.9 patch releases have the same flags. The settings check `tailscale_extra_up_flags` against this
table, and the lab's emulated `tailscale` builds its `up` and `set` flag sets from it: one table, so the
workstation refuses exactly what a host would. To follow a new release, edit this table from that
release's sources and change TAILSCALE_RELEASE.

Plain classes: the lab's emulated CLI imports this at every call.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Kind = Literal["bool", "notfalse", "string", "duration"]

TAILSCALE_RELEASE = "1.90.6"
# ipn.DefaultControlURL, the default of --login-server.
DEFAULT_CONTROL_URL = "https://controlplane.tailscale.com"
# The SaaS control server answers to both names (ipn.IsLoginServerSynonym); "" is the default.
TAILSCALE_CONTROL_URLS = frozenset({"", DEFAULT_CONTROL_URL, "https://login.tailscale.com"})


class TailscaleFlag:
    """One flag: its Go kind, default and usage, and which of `up` and `set` define it."""

    __slots__ = ("name", "kind", "default", "usage", "up", "set", "hidden", "prefixes")

    def __init__(
        self,
        name: str,
        kind: Kind,
        default: bool | str | float,
        usage: str,
        *,
        up: bool,
        set: bool,
        hidden: bool = False,
        prefixes: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind  # bool, notfalse (a bool that may only be true), string, duration
        self.default = default
        self.usage = usage
        self.up = up
        self.set = set
        self.hidden = hidden
        self.prefixes = prefixes  # the value is comma-separated CIDR prefixes

    @property
    def takes_value(self) -> bool:
        """A string or duration flag needs a value; a boolean one is `--x` or `--x=false`."""
        return self.kind in ("string", "duration")

    @property
    def commands(self) -> str:
        """Which commands define it, as a person would say it."""
        return " and ".join(c for c, has in (("up", self.up), ("set", self.set)) if has)


# name, Go kind, default on Linux, the commands that define it, usage (in up.go's order, then set's own)
_TABLE: tuple[tuple[str, Kind, bool | str | float, str, str], ...] = (
    ("qr", "bool", False, "up", "show QR code for login URLs"),
    ("qr-format", "string", "small", "up", "QR code formatting (small or large)"),
    ("auth-key", "string", "", "up", 'node authorization key; "file:PATH" reads it from a file'),
    ("client-id", "string", "", "up", "client ID for workload identity federation"),
    ("client-secret", "string", "", "up", "OAuth client secret, or file:PATH"),
    ("id-token", "string", "", "up", "ID token for workload identity federation, or file:PATH"),
    ("login-server", "string", DEFAULT_CONTROL_URL, "up", "base URL of control server"),
    ("accept-routes", "bool", False, "up set", "accept routes advertised by other Tailscale nodes"),
    ("accept-dns", "bool", True, "up set", "accept DNS configuration from the admin panel"),
    ("host-routes", "notfalse", True, "up", "install host routes to other nodes"),
    ("exit-node", "string", "", "up set", "Tailscale exit node (IP, base name, or auto:any)"),
    ("exit-node-allow-lan-access", "bool", False, "up set", "allow LAN access via an exit node"),
    ("shields-up", "bool", False, "up set", "don't allow incoming connections"),
    ("ssh", "bool", False, "up set", "run an SSH server, permitting access per tailnet policy"),
    ("advertise-tags", "string", "", "up", 'comma-separated ACL tags, each "tag:..."'),
    ("hostname", "string", "", "up set", "hostname to use instead of the one provided by the OS"),
    ("advertise-routes", "string", "", "up set", "routes to advertise (comma-separated CIDRs)"),
    ("advertise-connector", "bool", False, "up set", "advertise this node as an app connector"),
    ("advertise-exit-node", "bool", False, "up set", "offer to be an exit node for the tailnet"),
    ("report-posture", "bool", False, "up set", "allow gathering device posture information"),
    ("operator", "string", "", "up set", "Unix username to allow to operate on tailscaled"),
    ("snat-subnet-routes", "bool", True, "up set", "source NAT traffic to advertised routes"),
    ("stateful-filtering", "bool", False, "up set", "apply stateful filtering to forwarded packets"),
    ("netfilter-mode", "string", "on", "up set", "netfilter mode (one of on, nodivert, off)"),
    ("timeout", "duration", 0.0, "up", "maximum time to wait for the Running state"),
    ("json", "bool", False, "up", "output in JSON format"),
    ("reset", "bool", False, "up", "reset unspecified settings to their default values"),
    ("force-reauth", "bool", False, "up", "force reauthentication"),
    ("accept-risk", "string", "", "up set", "accept risk and skip confirmation for risk types"),
    ("nickname", "string", "", "set", "nickname for the current account"),
    ("update-check", "bool", True, "set", "notify about available Tailscale updates"),
    ("auto-update", "bool", False, "set", "automatically update to the latest version"),
    ("webclient", "bool", False, "set", "expose the web interface on port 5252"),
    ("relay-server-port", "string", "", "set", "UDP port for the relay server"),
)
# The ipn.Prefs field (`ipn/prefs.go`, dotted for a nested one) each flag only `set` has changes, as
# `tailscale debug prefs` prints it.
PREF_OF_SET_ONLY_FLAG = {
    "nickname": "ProfileName",
    "update-check": "AutoUpdate.Check",
    "auto-update": "AutoUpdate.Apply",
    "webclient": "RunWebClient",
    "relay-server-port": "RelayServerPort",
}
# set.go's refusal of --auto-update where `clientupdate.CanAutoUpdate()` is false, as on NixOS.
AUTO_UPDATE_UNSUPPORTED = "automatic updates are not supported on this platform"
# `up` hides these from its usage (`set` shows report-posture).
_HIDDEN_IN_UP = {"host-routes", "report-posture"}
_PREFIX_VALUED = {"advertise-routes"}

FLAGS: tuple[TailscaleFlag, ...] = tuple(
    TailscaleFlag(
        name,
        kind,
        default,
        usage,
        up="up" in commands.split(),
        set="set" in commands.split(),
        hidden=name in _HIDDEN_IN_UP,
        prefixes=name in _PREFIX_VALUED,
    )
    for name, kind, default, commands, usage in _TABLE
)

# CleanUpArgs rewrites these old spellings before any flag is parsed.
ALIASES = {"authkey": "auth-key", "posture-checking": "report-posture"}

BY_NAME = {f.name: f for f in FLAGS}
UP_FLAGS = tuple(f for f in FLAGS if f.up)
SET_FLAGS = tuple(f for f in FLAGS if f.set)

# Go's strconv.ParseBool, what a boolean flag's `=value` may be.
BOOL_VALUES = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}

# `--netfilter-mode` and the value of the NetfilterMode pref (preftype.NetfilterMode).
NETFILTER_MODES = {"off": 0, "nodivert": 1, "on": 2}

# Which ipn.Prefs fields each flag sets (up.go's `prefsOfFlag`): what a masked edit touches, and so what
# `tailscale up --reset` sets from its flags (`updatePrefs` visits ALL of up's flags then), while the prefs
# of set-only flags are kept. The flags that are no pref (`preflessFlag`) touch none.
PREFS_OF_FLAG: dict[str, tuple[str, ...]] = {
    "advertise-exit-node": ("AdvertiseRoutes",),
    "advertise-routes": ("AdvertiseRoutes",),
    "exit-node": ("ExitNodeIP", "ExitNodeID"),
    "accept-dns": ("CorpDNS",),
    "accept-routes": ("RouteAll",),
    "advertise-tags": ("AdvertiseTags",),
    "hostname": ("Hostname",),
    "login-server": ("ControlURL",),
    "netfilter-mode": ("NetfilterMode",),
    "shields-up": ("ShieldsUp",),
    "snat-subnet-routes": ("NoSNAT",),
    "stateful-filtering": ("NoStatefulFiltering",),
    "exit-node-allow-lan-access": ("ExitNodeAllowLANAccess",),
    "operator": ("OperatorUser",),
    "ssh": ("RunSSH",),
    "webclient": ("RunWebClient",),
    "nickname": ("ProfileName",),
    "update-check": ("AutoUpdate.Check",),
    "auto-update": ("AutoUpdate.Apply",),
    "advertise-connector": ("AppConnector",),
    "report-posture": ("PostureChecking",),
    "relay-server-port": ("RelayServerPort",),
}
PREFLESS_FLAGS = {
    "auth-key",
    "force-reauth",
    "reset",
    "qr",
    "qr-format",
    "json",
    "timeout",
    "accept-risk",
    "host-routes",
    "client-id",
    "client-secret",
    "id-token",
}
