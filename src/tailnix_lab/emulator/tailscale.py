"""The emulated `tailscale` CLI of a lab host: `python3 -m tailnix_lab.emulator.tailscale ARGS`.

It parses its arguments the way the real CLI does (Go's `flag` package under ffcli: `-x` and
`--x`, `--x=false` for booleans, exit code 2 and "flag provided but not defined" for an unknown
flag), with the `up` and `set` flags of the pinned release from `tailnix.tailscale_flags` and
routes read by `tailnix.prefix` (the same table and parser the settings check uses), talks to the emulated tailscaled state and the lab's control plane, and prints the real
messages. Every call is recorded in `/var/log/tailnix-lab/tailscale-argv.jsonl` with its full
argv, so tests can prove that no auth key ever reached a command line.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from tailnix.prefix import go_quote
from tailnix.tailscale_flags import (
    ALIASES,
    AUTO_UPDATE_UNSUPPORTED,
    BOOL_VALUES,
    PREFLESS_FLAGS,
    PREFS_OF_FLAG,
    SET_FLAGS,
    TAILSCALE_RELEASE,
    UP_FLAGS,
)
from tailnix_lab.emulator import tailscaled
from tailnix_lab.emulator.control import (
    EXIT_ROUTES,
    MAGIC_DNS_SUFFIX,
    TAILNET_NAME,
    KeyRejected,
    enabled_routes,
    node_key_expired,
    stable_id,
)
from tailnix_lab.emulator.hostroot import host_path
from tailnix_lab.emulator.oauthkey import ResolveError, resolve_auth_key
from tailnix_lab.emulator.tailscaled import (
    NEEDS_LOGIN,
    NEEDS_MACHINE_AUTH,
    NETFILTER_MODES,
    NO_STATE,
    RUNNING,
    STARTING,
    STOPPED,
    DaemonState,
)

# Every call starts a new interpreter, and the deploy's check of a converged host is two calls: what
# only some commands need (ipaddress, secrets, shlex) is imported where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

VERSION = TAILSCALE_RELEASE
LONG_VERSION = f"{TAILSCALE_RELEASE}-t6f2a1c9e0-g4b7d8e2a1"
GO_VERSION = "go1.25.3"
ARGV_LOG = "/var/log/tailnix-lab/tailscale-argv.jsonl"
CONNECT_ERROR = (
    "failed to connect to local tailscaled; it doesn't appear to be running "
    "(sudo systemctl start tailscaled ?)"
)
LOGIN_SERVER_SYNONYMS = {
    "https://login.tailscale.com",
    "https://controlplane.tailscale.com",
}
TAGGED_USER_ID = 2
TAGGED_LOGIN = "tagged-devices"
LAB_USER_ID = 1
LAB_LOGIN = f"admin@{TAILNET_NAME}"

ACCIDENTAL_UP_PREFIX = (
    "Error: changing settings via 'tailscale up' requires mentioning all\n"
    "non-default flags. To proceed, either re-run your command with --reset or\n"
    "use the command below to explicitly mention the current value of\n"
    "all non-default settings:\n\n"
    "\ttailscale up"
)


class CommandFailed(Exception):
    """A command failed: the message goes to stderr and the process exits with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- Go `flag` package semantics ---------------------------------------------------------------


class Flag:
    """One flag of a command: its Go kind decides how a value is parsed."""

    __slots__ = ("name", "kind", "default", "usage", "hidden")

    def __init__(self, name: str, kind: str, default: Any, usage: str, hidden: bool = False) -> None:
        self.name = name
        self.kind = kind  # bool, string, duration, notfalse
        self.default = default
        self.usage = usage
        self.hidden = hidden


class Command:
    """A subcommand: its usage text and its flag set."""

    __slots__ = ("name", "short_usage", "short_help", "flags", "show_defaults")

    def __init__(
        self,
        name: str,
        short_usage: str,
        short_help: str,
        flags: list[Flag] | None = None,
        show_defaults: bool = True,
    ) -> None:
        self.name = name
        self.short_usage = short_usage
        self.short_help = short_help
        self.flags: list[Flag] = [] if flags is None else flags
        self.show_defaults = show_defaults

    def usage(self) -> str:
        """The help text ffcli prints after a flag error or for --help."""
        lines = [self.short_help, "", "USAGE", f"  {self.short_usage}", ""]
        visible = [f for f in self.flags if not f.hidden]
        if visible:
            lines.append("FLAGS")
            for f in sorted(visible, key=lambda f: f.name):
                head = f"  --{f.name}, --{f.name}=false" if f.kind == "bool" else f"  --{f.name}"
                if f.kind == "string":
                    head += " string"
                elif f.kind == "duration":
                    head += " duration"
                text = f"    \t{f.usage}"
                default = format_default(f)
                if self.show_defaults and default:
                    text += f" (default {default})"
                lines.extend([head, text])
        return "\n".join(lines).strip() + "\n"


def format_default(f: Flag) -> str:
    """A flag's default as Go prints it in usage (empty means none shown)."""
    if f.kind == "bool":
        return "true" if f.default else "false"
    if f.kind == "duration":
        return go_duration(f.default)
    return str(f.default)


class ParsedFlags:
    """The outcome of parsing: every flag's value, which flags were set, and the rest."""

    __slots__ = ("values", "raw", "visited", "args")

    def __init__(
        self, values: dict[str, Any], raw: dict[str, str], visited: set[str], args: list[str]
    ) -> None:
        self.values = values
        self.raw = raw
        self.visited = visited
        self.args = args

    def visited_sorted(self) -> list[str]:
        """Set flags in the order Go's FlagSet.Visit gives them (lexicographical)."""
        return sorted(self.visited)


class FlagParseError(Exception):
    """A flag error: `message` is printed, then the command's usage, then exit 2."""

    def __init__(self, message: str | None) -> None:
        super().__init__(message or "help requested")
        self.message = message  # None means -h/--help: usage only, exit 0


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Patterns are compiled on first use (the `re` module caches them): most calls never need them.
_DURATION_PART = r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)"


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (`30s`, `1m30s`, `500ms`); ValueError when malformed."""
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(text)
    total, pos = 0.0, 0
    while pos < len(s):
        match = re.compile(_DURATION_PART).match(s, pos)
        if match is None or match.group(1) in ("", "."):
            raise ValueError(text)
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def go_duration(seconds: float) -> str:
    """Format seconds as Go's time.Duration.String does for whole and simple values."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{secs:g}s"


def parse_flags(command: Command, args: list[str]) -> ParsedFlags:
    """Parse `args` against `command`'s flags with the rules of Go's flag package."""
    by_name = {f.name: f for f in command.flags}
    values: dict[str, Any] = {f.name: f.default for f in command.flags}
    raw: dict[str, str] = {}
    visited: set[str] = set()
    rest = list(args)
    while rest:
        arg = rest[0]
        if len(arg) < 2 or arg[0] != "-":
            break
        minuses = 2 if arg[1] == "-" else 1
        if arg == "--":
            rest.pop(0)
            break
        name = arg[minuses:]
        if not name or name[0] in "-=":
            raise FlagParseError(f"bad flag syntax: {arg}")
        rest.pop(0)
        name, has_value, value = name.partition("=")
        spec = by_name.get(name)
        if spec is None:
            if name in ("help", "h"):
                raise FlagParseError(None)
            raise FlagParseError(f"flag provided but not defined: -{name}")
        if spec.kind in ("bool", "notfalse"):
            if not has_value:
                value = "true"
            if name in visited:
                if has_value:
                    raise FlagParseError(
                        f'invalid boolean value "{value}" for -{name}: flag provided multiple times'
                    )
                raise FlagParseError(f"invalid boolean flag {name}: flag provided multiple times")
            if value not in BOOL_VALUES:
                raise FlagParseError(f'invalid boolean value "{value}" for -{name}: parse error')
            if spec.kind == "notfalse" and value != "true":
                raise FlagParseError(
                    f'invalid boolean value "{value}" for -{name}: '
                    "unsupported value; only 'true' is allowed"
                )
            values[name] = BOOL_VALUES[value]
        else:
            if not has_value:
                if not rest:
                    raise FlagParseError(f"flag needs an argument: -{name}")
                value = rest.pop(0)
            if name in visited:
                raise FlagParseError(
                    f'invalid value "{value}" for flag -{name}: flag provided multiple times'
                )
            if spec.kind == "duration":
                try:
                    values[name] = parse_go_duration(value)
                except ValueError:
                    raise FlagParseError(f'invalid value "{value}" for flag -{name}: parse error') from None
            else:
                values[name] = value
        raw[name] = value
        visited.add(name)
    return ParsedFlags(values=values, raw=raw, visited=visited, args=rest)


_KEY_IN_TEXT = r"tskey-([A-Za-z0-9-]+)"


def redact_keys(text: str) -> str:
    """Replace what follows `tskey-` with X's, as the real CLI does for flag error output."""
    return re.sub(_KEY_IN_TEXT, lambda m: "tskey-" + "X" * len(m.group(1)), text)


def clean_up_args(args: list[str]) -> list[str]:
    """The real CLI's rewrite of old flag spellings (`--authkey` is `--auth-key`)."""
    out = []
    for arg in args:
        dashes = "--" if arg.startswith("--") else "-"
        name, equals, value = arg[len(dashes) :].partition("=")
        if arg.startswith("-") and name in ALIASES:
            arg = dashes + ALIASES[name] + equals + value
        out.append(arg)
    return out


# --- the commands' flag sets (Linux) -----------------------------------------------------------

UP = Command(
    "up",
    "tailscale up [flags]",
    "Connect to Tailscale, logging in if needed",
    [Flag(f.name, f.kind, f.default, f.usage, f.hidden) for f in UP_FLAGS],
)

SET = Command(
    "set",
    "tailscale set [flags]",
    "Change specified preferences",
    [Flag(f.name, f.kind, f.default, f.usage) for f in SET_FLAGS],
    show_defaults=False,
)

STATUS = Command(
    "status",
    "tailscale status [--active] [--web] [--json]",
    "Show state of tailscaled and its connections",
    [
        Flag("json", "bool", False, "output in JSON format"),
        Flag("web", "bool", False, "run webserver with HTML showing status"),
        Flag("active", "bool", False, "filter output to only peers with active sessions"),
        Flag("self", "bool", True, "show status of local machine"),
        Flag("peers", "bool", True, "show status of peers"),
        Flag("listen", "string", "127.0.0.1:8384", "listen address for web mode"),
        Flag("browser", "bool", True, "Open a browser in web mode"),
    ],
)

DOWN = Command(
    "down",
    "tailscale down",
    "Disconnect from Tailscale",
    [Flag("accept-risk", "string", "", "accept risk and skip confirmation for risk types")],
)
LOGOUT = Command(
    "logout",
    "tailscale logout [flags]",
    "Disconnect from Tailscale and expire current node key",
    [Flag("reason", "string", "", "reason for the logout, if required by a policy setting")],
)
IP = Command(
    "ip",
    "tailscale ip [-1] [-4] [-6] [peer hostname or ip address]",
    "Show Tailscale IP addresses",
    [
        Flag("1", "bool", False, "only print one IP address"),
        Flag("4", "bool", False, "only print IPv4 address"),
        Flag("6", "bool", False, "only print IPv6 address"),
    ],
)
VERSION_CMD = Command(
    "version",
    "tailscale version [flags]",
    "Print Tailscale version",
    [
        Flag("daemon", "bool", False, "also print local node's daemon version"),
        Flag("json", "bool", False, "output in JSON format"),
        Flag("upstream", "bool", False, "fetch and print the latest upstream release version"),
    ],
)
DEBUG = Command("debug", "tailscale debug <debug-flags | subcommand>", "Debug commands", [])
DEBUG_PREFS = Command(
    "prefs",
    "tailscale debug prefs",
    "Print prefs",
    [Flag("pretty", "bool", False, "If true, pretty-print output")],
)
ROOT = Command(
    "tailscale",
    "tailscale [flags] <subcommand> [command flags]",
    "The easiest, most secure way to use WireGuard.",
    [
        Flag("socket", "string", tailscaled.SOCKET_PATH, "path to tailscaled socket"),
        Flag("json-docs", "bool", False, "print JSON-encoded docs", hidden=True),
    ],
)

# Real subcommands the lab does not emulate: refused honestly rather than as unknown.
NOT_EMULATED = {
    "get",
    "login",
    "switch",
    "configure",
    "syspolicy",
    "netcheck",
    "dns",
    "metrics",
    "ping",
    "nc",
    "ssh",
    "funnel",
    "serve",
    "web",
    "file",
    "bugreport",
    "cert",
    "lock",
    "licenses",
    "exit-node",
    "update",
    "whois",
    "whoami",
    "drive",
    "id-token",
    "systray",
    "appc-routes",
    "wait",
}

# --- validation of values, as the real CLI does it ---------------------------------------------


def calc_advertise_routes(routes: str, exit_node: bool) -> list[str] | None:
    """Parse `--advertise-routes` as the CLI does and add the exit-node routes (None: no routes)."""
    from tailnix.prefix import PrefixError
    from tailnix.prefix import calc_advertise_routes as calc

    try:
        found = calc(routes.split(",") if routes else [], exit_node)
    except PrefixError as error:
        raise CommandFailed(error.message) from None
    return [str(p) for p in found] or None


def check_names(advertise_tags: str, hostname: str) -> None:
    """Refuse `--advertise-tags` and `--hostname` values as `prefsFromUpArgs` does (fatal, exit 1)."""
    from tailnix.tailnet_names import hostname_error, tags_error

    error = tags_error(advertise_tags) or hostname_error(hostname)
    if error:
        raise CommandFailed(error)


def netfilter_mode(value: str) -> tuple[int, str]:
    """The numeric netfilter mode and the warning the real CLI prints for it."""
    if value not in NETFILTER_MODES:
        raise CommandFailed(f'invalid value --netfilter-mode="{value}"')
    warning = {
        "nodivert": "netfilter=nodivert; add iptables calls to ts-* chains manually.",
        "off": "netfilter=off; configure iptables yourself.",
    }.get(value, "")
    return NETFILTER_MODES[value], warning


def netfilter_name(mode: int) -> str:
    """The flag spelling of a numeric netfilter mode."""
    for name, number in NETFILTER_MODES.items():
        if number == mode:
            return name
    return str(mode)


def read_secret_value(value: str) -> str:
    """`file:PATH` reads the value from PATH, whitespace-trimmed; anything else is the value."""
    if not value.startswith("file:"):
        return value
    path = value[len("file:") :]
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        raise CommandFailed(f"open {path}: no such file or directory") from None
    except PermissionError:
        raise CommandFailed(f"open {path}: permission denied") from None
    except IsADirectoryError:
        raise CommandFailed(f"read {path}: is a directory") from None


# --- talking to the daemon ---------------------------------------------------------------------


def require_daemon(socket_path: str) -> None:
    """Fail like the real CLI when tailscaled's socket is not there."""
    if not host_path(socket_path).exists():
        raise CommandFailed(CONNECT_ERROR)


def warn(message: str) -> None:
    """The real CLI's `Warning: ...` line on stdout."""
    print(f"Warning: {message}", flush=True)


def self_ips(state: DaemonState) -> list[str]:
    """This node's Tailscale IPs, when it is logged in."""
    if not state.logged_in or state.node_id is None:
        return []
    node = tailscaled.control_plane().node(state.node_id)
    return list(node["TailscaleIPs"]) if node else []


def peer_nodes(state: DaemonState) -> list[dict[str, Any]]:
    """The other nodes of the tailnet this node can see (logged-out nodes are gone)."""
    if not state.logged_in:
        return []
    return [
        n for n in tailscaled.control_plane().nodes() if n["ID"] != state.node_id and not n.get("LoggedOut")
    ]


def offers_exit_node(node: dict[str, Any]) -> bool:
    """Exit routes count only once approved: both of them (`tsaddr.ContainsExitRoutes` of AllowedIPs)."""
    enabled = enabled_routes(node)
    return all(route in enabled for route in EXIT_ROUTES)


def resolve_exit_node(value: str, state: DaemonState) -> tuple[str, str]:
    """Turn `--exit-node` into (ExitNodeIP, AutoExitNode)."""
    if value.startswith("auto:"):
        return "", value
    import ipaddress

    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is not None:
        if str(ip) in self_ips(state):
            raise CommandFailed(
                f"cannot use {ip} as an exit node as it is a local IP address; "
                "did you mean --advertise-exit-node?"
            )
        return str(ip), ""
    matches = [
        n for n in peer_nodes(state) if value in (n["DNSName"].split(".", 1)[0], n["DNSName"].rstrip("."))
    ]
    if len(matches) != 1:
        raise CommandFailed(f'invalid value "{value}" for --exit-node; must be IP or unique node name')
    if not offers_exit_node(matches[0]):
        raise CommandFailed(f'node "{value}" is not an exit node')
    return matches[0]["TailscaleIPs"][0], ""


def sync_control(state: DaemonState) -> None:
    """Tell the control plane what this node now advertises and whether it is connected."""
    if state.node_id is None or not state.logged_in:
        return
    control = tailscaled.control_plane()
    control.update_hostinfo(
        state.node_id,
        hostname=state.prefs["Hostname"] or tailscaled.os_hostname(),
        advertised_routes=list(state.prefs["AdvertiseRoutes"] or []),
    )
    control.set_online(state.node_id, bool(state.prefs["WantRunning"]))


def set_pref(prefs: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `AutoUpdate.Check`-style nested pref names."""
    *parents, leaf = dotted.split(".")
    target = prefs
    for name in parents:
        target = target.setdefault(name, {})
    target[leaf] = value


def get_pref(prefs: dict[str, Any], dotted: str) -> Any:
    """Read `AutoUpdate.Check`-style nested pref names."""
    value: Any = prefs
    for name in dotted.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


# --- tailscale up ------------------------------------------------------------------------------


def prefs_from_up_args(values: dict[str, Any], state: DaemonState) -> dict[str, Any]:
    """The complete prefs an `up` command line asks for (ipn.NewPrefs plus the flags)."""
    routes = calc_advertise_routes(values["advertise-routes"], values["advertise-exit-node"])
    if not values["exit-node"] and values["exit-node-allow-lan-access"]:
        raise CommandFailed("--exit-node-allow-lan-access can only be used with --exit-node")
    check_names(values["advertise-tags"], values["hostname"])
    tags = values["advertise-tags"].split(",") if values["advertise-tags"] else None
    prefs = tailscaled.default_prefs()
    prefs["ControlURL"] = values["login-server"]
    prefs["WantRunning"] = True
    prefs["RouteAll"] = values["accept-routes"]
    if values["exit-node"]:
        prefs["ExitNodeIP"], auto = resolve_exit_node(values["exit-node"], state)
        if auto:
            prefs["AutoExitNode"] = auto
    prefs["ExitNodeAllowLANAccess"] = values["exit-node-allow-lan-access"]
    prefs["CorpDNS"] = values["accept-dns"]
    prefs["ShieldsUp"] = values["shields-up"]
    prefs["RunSSH"] = values["ssh"]
    prefs["AdvertiseRoutes"] = routes
    prefs["AdvertiseTags"] = tags
    prefs["Hostname"] = values["hostname"]
    prefs["OperatorUser"] = values["operator"]
    prefs["AppConnector"] = {"Advertise": values["advertise-connector"]}
    prefs["PostureChecking"] = values["report-posture"]
    prefs["NoSNAT"] = not values["snat-subnet-routes"]
    prefs["NoStatefulFiltering"] = not values["stateful-filtering"]
    prefs["NetfilterMode"], warning = netfilter_mode(values["netfilter-mode"])
    if warning:
        warn(warning)
    return prefs


def prefs_to_flags(prefs: dict[str, Any]) -> dict[str, Any]:
    """The `up` flag values that would reproduce `prefs` (Linux flag set)."""
    routes = prefs["AdvertiseRoutes"] or []
    exit_routes = {"0.0.0.0/0", "::/0"}
    return {
        "ssh": prefs["RunSSH"],
        "login-server": prefs["ControlURL"],
        "accept-routes": prefs["RouteAll"],
        "accept-dns": prefs["CorpDNS"],
        "shields-up": prefs["ShieldsUp"],
        "exit-node": prefs["ExitNodeIP"],
        "exit-node-allow-lan-access": prefs["ExitNodeAllowLANAccess"],
        "advertise-tags": ",".join(prefs["AdvertiseTags"] or []),
        "hostname": prefs["Hostname"],
        "operator": prefs["OperatorUser"],
        "advertise-routes": ",".join(r for r in routes if r not in exit_routes),
        "advertise-exit-node": any(r in exit_routes for r in routes),
        "advertise-connector": bool((prefs.get("AppConnector") or {}).get("Advertise")),
        "snat-subnet-routes": not prefs["NoSNAT"],
        "stateful-filtering": prefs["NoStatefulFiltering"] is False,
        "netfilter-mode": netfilter_name(prefs["NetfilterMode"]),
        "report-posture": prefs["PostureChecking"],
    }


def fmt_flag_value_arg(name: str, value: Any) -> str:
    """How the real CLI spells one flag in its suggested command."""
    if value is True:
        return f"--{name}"
    if value == "":
        return f"--{name}="
    import shlex

    text = "false" if value is False else str(value)
    return f"--{name}={shlex.quote(text)}"


def check_for_accidental_setting_reverts(
    new: dict[str, Any], cur: dict[str, Any], parsed: ParsedFlags, state: DaemonState, backend: str
) -> bool:
    """Refuse an `up` that would silently reset settings; True means a bare `up`."""
    if cur["ControlURL"] == "":
        return False
    if not parsed.visited and state.logged_in and backend != NEEDS_LOGIN:
        return True
    flags_cur, flags_new = prefs_to_flags(cur), prefs_to_flags(new)
    missing = []
    for name, value_cur in flags_cur.items():
        value_new = flags_new[name]
        if name in parsed.visited or value_cur == value_new:
            continue
        if (
            name == "login-server"
            and value_cur in LOGIN_SERVER_SYNONYMS
            and value_new in LOGIN_SERVER_SYNONYMS
        ):
            continue
        if name == "stateful-filtering" and value_cur is True and value_new is False:
            continue
        missing.append(fmt_flag_value_arg(name, value_cur))
    if not missing:
        return False
    spec = {f.name: f for f in UP.flags}
    explicit = []
    for name in parsed.visited_sorted():
        if spec[name].kind in ("bool", "notfalse"):
            explicit.append(f"--{name}" if parsed.values[name] else f"--{name}=false")
        elif spec[name].kind == "duration":
            explicit.append(fmt_flag_value_arg(name, go_duration(parsed.values[name])))
        else:
            explicit.append(fmt_flag_value_arg(name, parsed.values[name]))
    text = ACCIDENTAL_UP_PREFIX + "".join(f" {a}" for a in explicit + sorted(missing))
    raise CommandFailed(text + "\n\n")


def apply_masked_edit(cur: dict[str, Any], new: dict[str, Any], flag_names: list[str]) -> dict[str, Any]:
    """Copy into `cur` the prefs that the named flags govern, taking values from `new`."""
    edited: dict[str, Any] = json.loads(json.dumps(cur))
    for name in flag_names:
        if name in PREFLESS_FLAGS:
            continue
        for pref in PREFS_OF_FLAG[name]:
            set_pref(edited, pref, get_pref(new, pref))
    return edited


def login_url(control_url: str) -> str:
    """The interactive login link a node without a key is given."""
    base = control_url.rstrip("/")
    if base in LOGIN_SERVER_SYNONYMS:
        base = "https://login.tailscale.com"
    import secrets

    return f"{base}/a/{secrets.token_hex(6)}"


def run_up(args: list[str], socket_path: str) -> int:
    """`tailscale up`: log in if needed and bring the node to Running."""
    parsed = parse_command_flags(UP, args)
    values = parsed.values
    if parsed.args:
        raise CommandFailed(f"too many non-flag arguments: {go_quote_list(parsed.args)}")
    require_daemon(socket_path)
    tailscaled.wait_until_started()
    reset, force_reauth = values["reset"], values["force-reauth"]
    login_error, auth_url = "", ""
    with tailscaled.locked_state() as state:
        backend = tailscaled.backend_state(state)
        prefs = prefs_from_up_args(values, state)
        cur = state.prefs
        if not reset:
            if (
                not prefs["OperatorUser"]
                and cur["OperatorUser"] == os.environ.get("USER", "")
                and "operator" not in parsed.visited
            ):
                prefs["OperatorUser"] = cur["OperatorUser"]
            simple_up = check_for_accidental_setting_reverts(prefs, cur, parsed, state, backend)
        else:
            simple_up = False
        control_url_changed = cur["ControlURL"] != prefs["ControlURL"] and not (
            cur["ControlURL"] in LOGIN_SERVER_SYNONYMS and prefs["ControlURL"] in LOGIN_SERVER_SYNONYMS
        )
        if control_url_changed and backend == RUNNING and not force_reauth:
            raise CommandFailed("can't change --login-server without --force-reauth")
        tags_changed = (cur["AdvertiseTags"] or None) != (prefs["AdvertiseTags"] or None)
        just_edit = (
            backend == RUNNING
            and not force_reauth
            and values["auth-key"] == ""
            and not control_url_changed
            and not tags_changed
        )
        if just_edit:
            names = [f.name for f in UP.flags] if reset else parsed.visited_sorted()
            state.prefs = apply_masked_edit(cur, prefs, names)
            state.prefs["WantRunning"] = True
            sync_control(state)
            return 0
        if simple_up:
            state.prefs["WantRunning"] = True
            sync_control(state)
        else:
            auth_url, login_error = start_with_prefs(state, prefs, values, tags_changed=tags_changed)
    if login_error:
        raise CommandFailed(f"backend error: {login_error}\n")
    if auth_url:
        if values["json"]:
            print(json.dumps({"AuthURL": auth_url, "BackendState": NEEDS_LOGIN}, indent="\t"))
        else:
            sys.stderr.write(f"\nTo authenticate, visit:\n\n\t{auth_url}\n\n")
    return wait_for_running(values, printed=bool(auth_url), control_url=prefs["ControlURL"])


def start_with_prefs(
    state: DaemonState, prefs: dict[str, Any], values: dict[str, Any], *, tags_changed: bool
) -> tuple[str, str]:
    """`up`'s start path (LocalClient.Start with the new prefs): log in when it must.

    A node logs in when it holds no valid node key (never logged in, logged out, key expired), with
    --force-reauth, and when its requested tags changed: control grants tags only at a login. With
    an auth key the login happens at once; without one control hands out a login URL. Returns that
    URL and the control server's refusal (both empty when neither happened). The backend starts
    over (`LocalBackend.Start`: NoState), so the node must find a path again to be Running.
    """
    state.running_in = None
    # up.go: the auth key takes precedence over --client-secret; an OAuth client secret in either is
    # exchanged for an auth key before Start, so a refusal leaves the prefs as they were.
    auth_key = read_secret_value(values["auth-key"]) or read_secret_value(values["client-secret"])
    try:
        auth_key = resolve_auth_key(auth_key, values["advertise-tags"].split(","))
    except ResolveError as error:
        raise CommandFailed(str(error)) from None
    node = tailscaled.control_plane().node(state.node_id) if state.logged_in and state.node_id else None
    holds_valid_key = node is not None and not node.get("LoggedOut") and not node_key_expired(node)
    prefs["LoggedOut"] = False
    prefs["ProfileName"] = state.prefs.get("ProfileName", "")
    state.prefs = prefs
    if not (values["force-reauth"] or not holds_valid_key or tags_changed):
        # A node that holds a valid node key ignores the auth key, as the real one does.
        state.last_login_error = ""
        sync_control(state)
        return "", ""
    if not auth_key:
        if state.node_id is not None:
            state.login_required = True
            tailscaled.control_plane().set_online(state.node_id, False)
        state.auth_url = login_url(prefs["ControlURL"])
        state.last_login_error = ""
        return state.auth_url, ""
    try:
        node = tailscaled.control_plane().login(
            auth_key,
            node_key=state.node_key,
            hostname=prefs["Hostname"] or tailscaled.os_hostname(),
            tags=tuple(prefs["AdvertiseTags"] or ()),
        )
    except KeyRejected as rejected:
        # Saved with the new prefs (the daemon took them before trying to log in).
        state.last_login_error = rejected.message
        state.login_required = state.node_id is not None
        if state.node_id is not None:
            tailscaled.control_plane().set_online(state.node_id, False)
        return "", rejected.message
    state.node_id = node["ID"]
    state.auth_url = ""
    state.last_login_error = ""
    state.login_required = False
    sync_control(state)
    return "", ""


def wait_for_running(values: dict[str, Any], *, printed: bool, control_url: str) -> int:
    """Wait, as `up` watches the IPN bus, until the node is Running (or `--timeout` passes).

    On the way a node waiting for device approval gets the admin page to visit, once
    (`printDeviceApprovalInfo`); "Success." follows only when something was printed before.
    Outside the lock: an admin (or a DERP coming back) may change the state meanwhile.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    timeout = values["timeout"]
    deadline = time.monotonic() + timeout if timeout > 0 else None
    approval_shown = False
    while True:
        with tailscaled.locked_state() as state:
            backend = tailscaled.backend_state(state)
        if backend == RUNNING:
            return finish_up(values, printed=printed)
        if backend == NEEDS_MACHINE_AUTH and not approval_shown:
            approval_shown = printed = True
            if values["json"]:
                print(json.dumps({"BackendState": NEEDS_MACHINE_AUTH}, indent="  "), flush=True)
            else:
                sys.stderr.write(
                    f"\nTo approve your machine, visit (as admin):\n\n\t{admin_page_url(control_url)}\n\n"
                )
                sys.stderr.flush()
        if deadline is not None and time.monotonic() >= deadline:
            raise CommandFailed(
                "timeout waiting for Tailscale service to enter a Running state; "
                'check health with "tailscale status"'
            )
        time.sleep(0.05)


def admin_page_url(control_url: str) -> str:
    """`Prefs.AdminPageURL` (tailscale v1.90.6 `ipn/prefs.go`): the control URL's `/admin`."""
    base = control_url.rstrip("/") or "https://controlplane.tailscale.com"
    if base in LOGIN_SERVER_SYNONYMS:
        base = "https://login.tailscale.com"
    return base + "/admin"


def finish_up(values: dict[str, Any], *, printed: bool) -> int:
    """What `up` prints once the node is Running."""
    if values["json"]:
        print(json.dumps({"BackendState": RUNNING}, indent="  "))
    elif printed:
        sys.stderr.write("Success.\n")
    return 0


def go_quote_list(items: list[str]) -> str:
    """Go's `%q` of a []string: `["a" "b"]`."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


# --- tailscale set -----------------------------------------------------------------------------


def run_set(args: list[str], socket_path: str) -> int:
    """`tailscale set`: change only the prefs named on the command line, never log in."""
    parsed = parse_command_flags(SET, args)
    values = parsed.values
    if parsed.args:
        raise CommandFailed(f"too many non-flag arguments: {go_quote_list(parsed.args)}")
    require_daemon(socket_path)
    with tailscaled.locked_state() as state:
        new = json.loads(json.dumps(state.prefs))
        new["ProfileName"] = values["nickname"]
        new["RouteAll"] = values["accept-routes"]
        new["CorpDNS"] = values["accept-dns"]
        new["ExitNodeAllowLANAccess"] = values["exit-node-allow-lan-access"]
        new["ShieldsUp"] = values["shields-up"]
        new["RunSSH"] = values["ssh"]
        new["RunWebClient"] = values["webclient"]
        new["Hostname"] = values["hostname"]
        new["OperatorUser"] = values["operator"]
        new["NoSNAT"] = not values["snat-subnet-routes"]
        new["AutoUpdate"] = {"Check": values["update-check"], "Apply": values["auto-update"]}
        new["AppConnector"] = {"Advertise": values["advertise-connector"]}
        new["PostureChecking"] = values["report-posture"]
        new["NoStatefulFiltering"] = not values["stateful-filtering"]
        new["NetfilterMode"], warning = netfilter_mode(values["netfilter-mode"])
        if warning:
            warn(warning)
        if values["exit-node"]:
            new["ExitNodeIP"], auto = resolve_exit_node(values["exit-node"], state)
            if auto:
                new["AutoExitNode"] = auto
        elif "exit-node" in parsed.visited:
            # `--exit-node=` stops using an exit node.
            new["ExitNodeIP"] = new["ExitNodeID"] = ""
        visited = [n for n in parsed.visited_sorted() if n not in PREFLESS_FLAGS]
        if not visited:
            sys.stderr.write(SET.usage())
            return 0
        if "auto-update" in parsed.visited:
            # set.go: `clientupdate.CanAutoUpdate()` is false on NixOS, whose generation updates tailscale.
            raise CommandFailed(AUTO_UPDATE_UNSUPPORTED)
        if "advertise-routes" in parsed.visited or "advertise-exit-node" in parsed.visited:
            new["AdvertiseRoutes"] = routes_for_set(parsed, state.prefs)
        if "nickname" in parsed.visited and values["nickname"] in state.other_profiles:
            # set.go checks the edited prefs first (`CheckPrefs`); local.go `checkProfileNameLocked`.
            raise CommandFailed(f"profile name {go_quote(values['nickname'])} already in use")
        if values["relay-server-port"]:
            port = values["relay-server-port"]
            if not port.isdigit() or int(port) > 65535:
                raise CommandFailed(
                    f'failed to set relay server port: strconv.ParseUint: parsing "{port}": '
                    + ("value out of range" if port.isdigit() else "invalid syntax")
                )
            new["RelayServerPort"] = int(port)
        state.prefs = apply_masked_edit(state.prefs, new, visited)
        sync_control(state)
    return 0


def routes_for_set(parsed: ParsedFlags, cur: dict[str, Any]) -> list[str] | None:
    """`set`'s rule for AdvertiseRoutes: keep the half of it that was not mentioned."""
    values = parsed.values
    routes_set = "advertise-routes" in parsed.visited
    exit_set = "advertise-exit-node" in parsed.visited
    cur_routes = list(cur["AdvertiseRoutes"] or [])
    cur_exit = "0.0.0.0/0" in cur_routes and "::/0" in cur_routes
    if routes_set and exit_set:
        return calc_advertise_routes(values["advertise-routes"], values["advertise-exit-node"])
    if routes_set:
        return calc_advertise_routes(values["advertise-routes"], cur_exit)
    if cur_exit == values["advertise-exit-node"]:
        return cur_routes or None
    kept = [r for r in cur_routes if not r.endswith("/0")]
    if values["advertise-exit-node"]:
        kept += ["0.0.0.0/0", "::/0"]
    return kept or None


# --- status, ip, down, logout, version, debug prefs --------------------------------------------


def peer_status(node: dict[str, Any] | None, *, online: bool, os_name: str) -> dict[str, Any]:
    """One ipnstate.PeerStatus, from a control plane node (None: a node not logged in)."""
    if node is None:
        return {
            "ID": "",
            "PublicKey": "nodekey:" + "0" * 64,
            "HostName": os_name,
            "DNSName": "",
            "OS": "linux",
            "UserID": 0,
            "TailscaleIPs": None,
            "AllowedIPs": None,
            "Addrs": None,
            "CurAddr": "",
            "Relay": "",
            "RxBytes": 0,
            "TxBytes": 0,
            "Created": "0001-01-01T00:00:00Z",
            "LastWrite": "0001-01-01T00:00:00Z",
            "LastSeen": "0001-01-01T00:00:00Z",
            "LastHandshake": "0001-01-01T00:00:00Z",
            "Online": False,
            "ExitNode": False,
            "ExitNodeOption": False,
            "Active": False,
            "PeerAPIURL": None,
            "InNetworkMap": False,
            "InMagicSock": False,
            "InEngine": False,
        }
    ips = list(node["TailscaleIPs"])
    status: dict[str, Any] = {
        "ID": stable_id(node),
        "PublicKey": node["NodeKey"],
        "HostName": node["HostName"],
        "DNSName": node["DNSName"],
        "OS": "linux",
        "UserID": TAGGED_USER_ID if node.get("Tags") else LAB_USER_ID,
        "TailscaleIPs": ips,
        "AllowedIPs": [f"{ips[0]}/32", f"{ips[1]}/128", *enabled_routes(node)],
        "Addrs": None,
        "CurAddr": "",
        "Relay": "",
        "RxBytes": 0,
        "TxBytes": 0,
        "Created": node["Created"],
        "LastWrite": "0001-01-01T00:00:00Z",
        "LastSeen": node.get("LastSeen", "0001-01-01T00:00:00Z"),
        "LastHandshake": "0001-01-01T00:00:00Z",
        "Online": online,
        "ExitNode": False,
        "ExitNodeOption": offers_exit_node(node),
        "Active": False,
        "PeerAPIURL": [f"http://{ips[0]}:36417"],
        "InNetworkMap": True,
        "InMagicSock": False,
        "InEngine": False,
    }
    # ipnstate.PeerStatus.KeyExpiry is a *time.Time, omitted when the device's key expiry is disabled.
    if not node.get("KeyExpiryDisabled"):
        status["KeyExpiry"] = node["KeyExpiry"]
    if node.get("Tags"):
        status["Tags"] = list(node["Tags"])
    # `peerStatusFromNode` (ipn/ipnlocal/local.go): PrimaryRoutes, omitted when empty, are the subnet
    # routes control made this node the router for; exit routes are not among them.
    primary = [route for route in enabled_routes(node) if route not in EXIT_ROUTES]
    if primary:
        status["PrimaryRoutes"] = primary
    return status


def build_status(state: DaemonState, *, with_peers: bool) -> dict[str, Any]:
    """ipnstate.Status as `tailscale status --json` prints it."""
    backend = tailscaled.backend_state(state)
    control = tailscaled.control_plane()
    node = control.node(state.node_id) if state.logged_in and state.node_id else None
    hostname = state.prefs["Hostname"] or tailscaled.os_hostname()
    users: dict[str, Any] = {}
    peers: dict[str, Any] | None = None
    if node is not None:
        nodes = [node]
        if with_peers:
            peers = {}
            for peer in peer_nodes(state):
                peers[peer["NodeKey"]] = peer_status(
                    peer, online=bool(peer.get("Online")), os_name=peer["HostName"]
                )
                nodes.append(peer)
        for n in nodes:
            user_id = TAGGED_USER_ID if n.get("Tags") else LAB_USER_ID
            login = TAGGED_LOGIN if n.get("Tags") else LAB_LOGIN
            users[str(user_id)] = {
                "ID": user_id,
                "LoginName": login,
                "DisplayName": login,
                "ProfilePicURL": "",
            }
    logged_in = node is not None
    status: dict[str, Any] = {
        "Version": LONG_VERSION,
        "TUN": True,
        "BackendState": backend,
        "HaveNodeKey": logged_in,
        "AuthURL": state.auth_url if backend == NEEDS_LOGIN else "",
        "TailscaleIPs": list(node["TailscaleIPs"]) if node else None,
        "Self": peer_status(node, online=backend == RUNNING, os_name=hostname),
        "Health": tailscaled.health_messages(state, backend),
        "MagicDNSSuffix": MAGIC_DNS_SUFFIX,
        "CurrentTailnet": {
            "Name": TAILNET_NAME,
            "MagicDNSSuffix": MAGIC_DNS_SUFFIX,
            "MagicDNSEnabled": True,
        }
        if logged_in
        else None,
        "CertDomains": None,
        "Peer": peers,
        "User": users or None,
        "ClientVersion": None,
    }
    exit_node = exit_node_status(state)
    if exit_node is not None:
        status["ExitNodeStatus"] = exit_node
    return status


def exit_node_status(state: DaemonState) -> dict[str, Any] | None:
    """ipnstate.ExitNodeStatus while all traffic goes through an exit node (None otherwise).

    An exit node of the lab is never a working one (unapproved, it carries nothing; approved, it has
    no internet behind it): its traffic is black-holed, and the lab's host stops answering new SSH connections (`reachability`). An
    exit node IP that no peer holds shows with an empty ID.
    """
    in_use = tailscaled.exit_node_in_use(state)
    if not in_use:
        return None
    for peer in peer_nodes(state):
        if in_use in (peer["ID"], *peer["TailscaleIPs"]):
            ips = list(peer["TailscaleIPs"])
            return {
                "ID": peer["ID"],
                "Online": bool(peer.get("Online")),
                "TailscaleIPs": [f"{ips[0]}/32", f"{ips[1]}/128"],
            }
    suffix = "/128" if ":" in in_use else "/32"
    return {"ID": "", "Online": False, "TailscaleIPs": [in_use + suffix]}


def status_line(status: dict[str, Any], peer: dict[str, Any]) -> str:
    """One line of the plain `tailscale status` table."""
    ips = peer["TailscaleIPs"] or [""]
    name = peer["DNSName"].removesuffix(f".{MAGIC_DNS_SUFFIX}.")
    if not name:
        name = f'("{peer["HostName"]}")'
    user = (status["User"] or {}).get(str(peer["UserID"]))
    owner = user["LoginName"] if user else "-"
    if "@" in owner:
        owner = owner[: owner.index("@") + 1]
    state = "-" if peer["Online"] else "offline"
    return f"{ips[0]:<15} {name:<20} {owner:<12} {peer['OS']:<7} {state}"


def run_status(args: list[str], socket_path: str) -> int:
    """`tailscale status`."""
    parsed = parse_command_flags(STATUS, args)
    values = parsed.values
    if parsed.args:
        raise CommandFailed("unexpected non-flag arguments to 'tailscale status'")
    require_daemon(socket_path)
    if values["web"]:
        raise CommandFailed("the lab's tailscale does not emulate 'tailscale status --web'")
    with tailscaled.locked_state() as state:
        status = build_status(state, with_peers=values["peers"])
    if values["json"]:
        if values["active"] and status["Peer"]:
            status["Peer"] = {k: p for k, p in status["Peer"].items() if p["Active"]}
        sys.stdout.write(json.dumps(status, indent="  "))
        return 0
    # As `runStatus` prints it: the health check after the nodes, and in a state that is neither
    # Running nor Starting only the state's description (with the health check in NoState alone).
    health = ["# Health check:", *(f"#     - {m}" for m in status["Health"])] if status["Health"] else []
    backend = status["BackendState"]
    description = {
        STOPPED: "Tailscale is stopped.",
        NEEDS_LOGIN: "Logged out." + (f"\nLog in at: {status['AuthURL']}" if status["AuthURL"] else ""),
        NEEDS_MACHINE_AUTH: "Machine is not yet approved by tailnet admin.",
    }.get(backend, f"unexpected state: {backend}")
    if backend not in (RUNNING, STARTING):
        context = [*health, ""] if health and backend == NO_STATE else []
        print("\n".join([*context, description]))
        return 1
    out: list[str] = []
    if values["self"]:
        out.append(status_line(status, status["Self"]))
    if values["peers"] and status["Peer"]:
        peers = sorted(status["Peer"].values(), key=lambda p: p["TailscaleIPs"][0])
        out.extend(status_line(status, p) for p in peers if not values["active"] or p["Active"])
    if health:
        out += ["", *health]
    print("\n".join(out))
    return 0


def run_ip(args: list[str], socket_path: str) -> int:
    """`tailscale ip [-1|-4|-6] [peer]`."""
    parsed = parse_command_flags(IP, args)
    values = parsed.values
    if len(parsed.args) > 1:
        raise CommandFailed("too many arguments, expected at most one peer")
    if sum(bool(values[k]) for k in ("1", "4", "6")) > 1:
        raise CommandFailed("tailscale ip -1, -4, and -6 are mutually exclusive")
    require_daemon(socket_path)
    want4, want6 = values["4"], values["6"]
    if not want4 and not want6:
        want4 = want6 = True
    with tailscaled.locked_state() as state:
        backend = tailscaled.backend_state(state)
        ips = self_ips(state)
        if parsed.args:
            of = parsed.args[0]
            found = [
                n
                for n in peer_nodes(state)
                if of in (*n["TailscaleIPs"], n["HostName"], n["DNSName"].split(".", 1)[0])
                or of == n["DNSName"].rstrip(".")
            ]
            if not found:
                raise CommandFailed(f"unknown peer {of!r}" if ":" not in of else of)
            ips = list(found[0]["TailscaleIPs"])
    if not ips:
        raise CommandFailed(f"no current Tailscale IPs; state: {backend}")
    if values["1"]:
        ips = ips[:1]
    shown = [ip for ip in ips if (":" not in ip and want4) or (":" in ip and want6)]
    for ip in shown:
        print(ip)
    if not shown:
        raise CommandFailed("no Tailscale IPv4 address" if values["4"] else "no Tailscale IPv6 address")
    return 0


def run_down(args: list[str], socket_path: str) -> int:
    """`tailscale down`: WantRunning=false."""
    parsed = parse_command_flags(DOWN, args)
    if parsed.args:
        raise CommandFailed(f"too many non-flag arguments: {go_quote_list(parsed.args)}")
    require_daemon(socket_path)
    with tailscaled.locked_state() as state:
        if tailscaled.backend_state(state) == STOPPED:
            sys.stderr.write("Tailscale was already stopped.\n")
            return 0
        state.prefs["WantRunning"] = False
        if state.node_id is not None and state.logged_in:
            tailscaled.control_plane().set_online(state.node_id, False)
    return 0


def run_logout(args: list[str], socket_path: str) -> int:
    """`tailscale logout`: expire the node key; the node needs a new login."""
    parsed = parse_command_flags(LOGOUT, args)
    if parsed.args:
        raise CommandFailed(f"too many non-flag arguments: {go_quote_list(parsed.args)}")
    require_daemon(socket_path)
    with tailscaled.locked_state() as state:
        if state.node_id is not None and state.logged_in:
            tailscaled.control_plane().logout(state.node_id)
        state.prefs["LoggedOut"] = True
        state.prefs["WantRunning"] = False
        state.auth_url = ""
    return 0


def run_version(args: list[str], socket_path: str) -> int:
    """`tailscale version`."""
    values = parse_command_flags(VERSION_CMD, args).values
    if values["upstream"]:
        raise CommandFailed("the lab has no network to fetch the upstream version from")
    if values["daemon"]:
        require_daemon(socket_path)
    if values["json"]:
        info: dict[str, Any] = {
            "majorMinorPatch": VERSION,
            "short": VERSION,
            "long": LONG_VERSION,
            "unstableBranch": False,
            "gitCommit": "6f2a1c9e0b3d4a5f6e7d8c9b0a1f2e3d4c5b6a70",
            "cap": 125,
        }
        if values["daemon"]:
            info["daemonLong"] = LONG_VERSION
        print(json.dumps(info, indent="  "))
        return 0
    print(VERSION)
    print("  tailscale commit: 6f2a1c9e0b3d4a5f6e7d8c9b0a1f2e3d4c5b6a70")
    print(f"  long version: {LONG_VERSION}")
    print(f"  go version: {GO_VERSION}")
    if values["daemon"]:
        print(f"Daemon: {LONG_VERSION}")
    return 0


def run_debug(args: list[str], socket_path: str) -> int:
    """`tailscale debug prefs` (the only debug subcommand the lab emulates)."""
    parsed = parse_command_flags(DEBUG, args)
    if not parsed.args:
        sys.stderr.write(DEBUG.usage())
        return 0
    sub, rest = parsed.args[0], parsed.args[1:]
    if sub != "prefs":
        raise CommandFailed(f"the lab's tailscale does not emulate 'tailscale debug {sub}'")
    values = parse_command_flags(DEBUG_PREFS, rest).values
    require_daemon(socket_path)
    prefs = tailscaled.read_prefs()
    if values["pretty"]:
        print(pretty_prefs(prefs))
    else:
        print(json.dumps(prefs, indent="\t"))
    return 0


def pretty_prefs(prefs: dict[str, Any]) -> str:
    """A one-line summary in the spirit of ipn.Prefs.Pretty()."""
    parts = [
        f"ControlURL={prefs['ControlURL']}" if prefs["ControlURL"] else "",
        "mesh=true" if prefs["WantRunning"] else "",
        f"dns={str(prefs['CorpDNS']).lower()}",
        f"want={str(prefs['WantRunning']).lower()}",
        "ssh=true" if prefs["RunSSH"] else "",
        f"routes={prefs['AdvertiseRoutes'] or []}",
    ]
    return "Prefs{" + " ".join(p for p in parts if p) + "}"


# --- entry point -------------------------------------------------------------------------------


def parse_command_flags(command: Command, args: list[str]) -> ParsedFlags:
    """Parse a subcommand's flags; a flag error prints usage and exits 2, as ffcli does."""
    try:
        return parse_flags(command, args)
    except FlagParseError as err:
        if err.message is not None:
            sys.stderr.write(redact_keys(err.message) + "\n")
        sys.stderr.write(command.usage())
        raise SystemExit(0 if err.message is None else 2) from None


def record_call(args: list[str]) -> None:
    """Append this call to the host's argv log (argv in full, environment names only)."""
    path = host_path(ARGV_LOG)
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": ["tailscale", *args],
        "env_names": sorted(os.environ),
        "uid": os.getuid(),
        "ppid": os.getppid(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as log:
            log.write(json.dumps(entry) + "\n")
    except OSError as err:
        sys.stderr.write(f"tailnix lab: cannot record this call in {ARGV_LOG}: {err}\n")


HANDLERS: dict[str, Callable[[list[str], str], int]] = {
    "up": run_up,
    "set": run_set,
    "down": run_down,
    "logout": run_logout,
    "status": run_status,
    "ip": run_ip,
    "version": run_version,
    "debug": run_debug,
}


def main(argv: list[str] | None = None) -> int:
    """Run one `tailscale` command and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    record_call(args)
    args = clean_up_args(args)
    if args in (["-V"], ["--version"]):
        args = ["version"]
    elif args == ["help"]:
        args = ["--help"]
    root = parse_command_flags(ROOT, args)
    if not root.args:
        sys.stderr.write(ROOT.usage())
        return 0
    name, rest = root.args[0], root.args[1:]
    handler = HANDLERS.get(name)
    try:
        if handler is None:
            if name in NOT_EMULATED:
                raise CommandFailed(f"the lab's tailscale does not emulate 'tailscale {name}'")
            raise CommandFailed(f"tailscale: unknown subcommand: {name}")
        return handler(rest, root.values["socket"])
    except CommandFailed as failure:
        message = failure.message
        sys.stdout.flush()
        sys.stderr.write(message if message.endswith("\n") else message + "\n")
        return failure.code
    except tailscaled.NotRunning:
        sys.stderr.write(CONNECT_ERROR + "\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
