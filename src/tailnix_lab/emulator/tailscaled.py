"""The emulated `tailscaled` of a lab host: whether it runs, and the node state it keeps.

The daemon "runs" while `/run/tailscale/tailscaled.sock` exists (a marker file holding its start
time). Node state persists in `/var/lib/tailscale/tailscaled.state` as JSON: the node key, the
prefs (with the real `ipn.Prefs` field names), the control plane's id for this node, the pending
login URL and the last login error. The emulated NixOS activation calls `start()` and `stop()`;
the emulated `tailscale` CLI reads and edits the state through `locked_state()`. Every change of
the state also decides whether the host still answers SSH (`reachability`): an exit node in use
black-holes new connections.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from tailnix import tailscale_flags
from tailnix_lab.emulator import reachability
from tailnix_lab.emulator.control import DERP_REGION_NAME, ControlPlane, node_key_expired
from tailnix_lab.emulator.hostroot import control_dir, host_path

# Every `tailscale` call of a lab host imports this module: keep its imports to what every call needs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

SOCKET_PATH = "/run/tailscale/tailscaled.sock"
STATE_DIR = "/var/lib/tailscale"
STATE_PATH = "/var/lib/tailscale/tailscaled.state"
# How long a freshly started daemon reports NoState before it has read its state.
STARTUP_SECONDS = 0.5

DEFAULT_CONTROL_URL = tailscale_flags.DEFAULT_CONTROL_URL
# preftype.NetfilterMode: off=0, nodivert=1, on=2; `debug prefs` shows the number.
NETFILTER_MODES = tailscale_flags.NETFILTER_MODES

NO_STATE = "NoState"
NEEDS_LOGIN = "NeedsLogin"
NEEDS_MACHINE_AUTH = "NeedsMachineAuth"
STOPPED = "Stopped"
STARTING = "Starting"
RUNNING = "Running"

STOPPED_HEALTH = "Tailscale is stopped."
# health.Warnable.TimeToVisible of the relay warnings.
DERP_WARNING_SECONDS = 10.0
# warmingUpWarnableDuration, also how long `recentlyOn` keeps the relay warnings quiet.
WARMING_UP_SECONDS = 5.0
WARMING_UP_HEALTH = "Tailscale is starting. Please wait."


class NotRunning(Exception):
    """The CLI could not reach tailscaled."""


def default_prefs() -> dict[str, Any]:
    """The prefs of a daemon that has never been told anything (ControlURL empty until `up`)."""
    return {
        "ControlURL": "",
        "RouteAll": False,
        "ExitNodeID": "",
        "ExitNodeIP": "",
        "InternalExitNodePrior": "",
        "ExitNodeAllowLANAccess": False,
        "CorpDNS": True,
        "RunSSH": False,
        "RunWebClient": False,
        "WantRunning": False,
        "LoggedOut": False,
        "ShieldsUp": False,
        "AdvertiseTags": None,
        "Hostname": "",
        "NotepadURLs": False,
        "AdvertiseRoutes": None,
        "AdvertiseServices": None,
        "NoSNAT": False,
        "NoStatefulFiltering": "true",
        "NetfilterMode": NETFILTER_MODES["on"],
        "OperatorUser": "",
        "ProfileName": "",
        "AutoUpdate": {"Check": True, "Apply": None},
        "AppConnector": {"Advertise": False},
        "PostureChecking": False,
        "NetfilterKind": "",
        "DriveShares": None,
        "AllowSingleHosts": True,
    }


class DaemonState:
    """What tailscaled keeps about this node between restarts."""

    def __init__(
        self,
        node_key: str,
        prefs: dict[str, Any] | None = None,
        node_id: str | None = None,
        auth_url: str = "",
        last_login_error: str = "",
        login_required: bool = False,
        running_in: float | None = None,
        turned_on: tuple[float, float] | None = None,
        other_profiles: list[str] | None = None,
    ) -> None:
        self.node_key = node_key
        self.prefs: dict[str, Any] = default_prefs() if prefs is None else prefs
        self.node_id = node_id
        self.auth_url = auth_url
        self.last_login_error = last_login_error
        # Control asked this registered node to log in again (changed tags, --force-reauth, or a
        # re-registration it refused): the controlclient's AuthCantContinue.
        self.login_required = login_required
        # The daemon run (its start time) in which the node reached Running: it stays Running for
        # the rest of that run unless it stops, logs out or must log in again.
        self.running_in = running_in
        # (daemon run, time) when the node was last turned on (WantRunning false -> true, or the
        # daemon started with it): the health tracker's `ipnWantRunningLastTrue`.
        self.turned_on = turned_on
        # The names of the node's other login profiles (`ipn/ipnlocal/profiles.go`): what a `tailscale
        # login` on a node that had one left. The lab has no `login`/`switch`: tests write them in.
        self.other_profiles: list[str] = list(other_profiles or [])
        # Read from control with the state, for the health warnings (not saved).
        self.derp_down_since: float | None = None
        self.now = time.time()

    def to_json(self) -> dict[str, Any]:
        """The on-disk form."""
        return {
            "NodeKey": self.node_key,
            "NodeID": self.node_id,
            "Prefs": self.prefs,
            "AuthURL": self.auth_url,
            "LastLoginError": self.last_login_error,
            "LoginRequired": self.login_required,
            "RunningIn": self.running_in,
            "TurnedOn": list(self.turned_on) if self.turned_on else None,
            "OtherProfiles": self.other_profiles,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DaemonState:
        """Read the on-disk form, filling prefs added since it was written."""
        prefs = default_prefs()
        prefs.update(data.get("Prefs") or {})
        return cls(
            node_key=data["NodeKey"],
            prefs=prefs,
            node_id=data.get("NodeID"),
            auth_url=data.get("AuthURL") or "",
            last_login_error=data.get("LastLoginError") or "",
            login_required=bool(data.get("LoginRequired")),
            running_in=data.get("RunningIn"),
            turned_on=tuple(data["TurnedOn"]) if data.get("TurnedOn") else None,
            other_profiles=[str(name) for name in data.get("OtherProfiles") or []],
        )

    @property
    def logged_in(self) -> bool:
        """True when the node holds a node key the control plane accepted."""
        return self.node_id is not None and not self.prefs["LoggedOut"] and not self.login_required


def new_node_key() -> str:
    """A node public key in the form `tailscale status` prints."""
    import secrets

    return "nodekey:" + secrets.token_hex(32)


def control_plane() -> ControlPlane:
    """The lab's control plane as this host sees it."""
    return ControlPlane(control_dir())


def os_hostname() -> str:
    """The host's name as tailscaled reads it from the OS."""
    try:
        name = host_path("/etc/hostname").read_text().strip()
    except OSError:
        name = ""
    if name:
        return name
    import socket

    return socket.gethostname()


def is_running() -> bool:
    """True while the daemon's socket exists."""
    return host_path(SOCKET_PATH).exists()


def started_at() -> float:
    """When the running daemon started (raises NotRunning when it does not run)."""
    try:
        marker = json.loads(host_path(SOCKET_PATH).read_text())
    except FileNotFoundError as err:
        raise NotRunning from err
    except (OSError, ValueError):
        return 0.0
    return float(marker.get("started", 0.0))


@contextmanager
def locked_state() -> Iterator[DaemonState]:
    """Yield this node's state under an exclusive lock and save it afterwards."""
    state_dir = host_path(STATE_DIR)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Locking the directory itself keeps the state directory free of lab-only files.
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        path = host_path(STATE_PATH)
        if path.exists():
            state = DaemonState.from_json(json.loads(path.read_text()))
        else:
            state = DaemonState(node_key=new_node_key())
        yield state
        _write_state(path, state)
        # With LAN access allowed, the host's local routes stay out of the exit route
        # (`--exit-node-allow-lan-access`): the deployer's SSH over the LAN still gets its answers.
        exit_node = "" if state.prefs.get("ExitNodeAllowLANAccess") else exit_node_in_use(state)
    finally:
        os.close(dir_fd)
    # Outside the lock: the black hole's guard process must not inherit it.
    reachability.enforce(exit_node)


def read_prefs() -> dict[str, Any]:
    """This node's prefs, read under a shared lock, for a call that only reads them (`debug prefs`).

    `locked_state` writes the state back and settles the host's reachability after every call: for a
    question asked of every host at every deploy that cost more than the answer.
    """
    path = host_path(STATE_PATH)
    state_dir = host_path(STATE_DIR)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_SH)
        if path.exists():
            return DaemonState.from_json(json.loads(path.read_text())).prefs
    finally:
        os.close(dir_fd)
    with locked_state() as state:  # no state yet: made as any other call makes it
        return state.prefs


def _write_state(path: Path, state: DaemonState) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state.to_json(), out, indent=2)
        out.write("\n")
    os.replace(tmp, path)


def exit_node_in_use(state: DaemonState) -> str:
    """The exit node all of this host's traffic goes through now, or "" when none.

    Only a running daemon of a logged-in node that wants to run routes anything; `down`, `logout`
    and stopping tailscaled all take the exit route away again.
    """
    if not (is_running() and state.logged_in and state.prefs["WantRunning"]):
        return ""
    return str(state.prefs["ExitNodeID"] or state.prefs["ExitNodeIP"] or "")


def backend_state(state: DaemonState) -> str:
    """The ipn.State name the daemon would report now.

    As `nextStateLocked` in tailscale v1.90.6 `ipn/ipnlocal/local.go` decides it: Stopped when the
    node does not want to run; NeedsLogin when it is logged out or its node key expired;
    NeedsMachineAuth while control has not authorized the machine; Starting until there is a live
    path (a peer or DERP); then Running, which it stays when the path goes (`state == ipn.Running`):
    health warnings say so instead. Remembers in `state` whether the node reached Running.
    """
    started = started_at()
    if time.time() - started < STARTUP_SECONDS:
        return NO_STATE
    state.derp_down_since = None
    backend = _next_state(state, started)
    state.running_in = started if backend == RUNNING else None
    if not state.prefs["WantRunning"]:
        state.turned_on = None
    elif state.turned_on is None or state.turned_on[0] != started:
        state.turned_on = (started, state.now)
    return backend


def _next_state(state: DaemonState, started: float) -> str:
    if not state.prefs["WantRunning"]:
        return STOPPED if state.logged_in and state.node_id is not None else NEEDS_LOGIN
    if not state.logged_in or state.node_id is None:
        state.now = control_plane().now()
        return NEEDS_LOGIN
    node, path, state.derp_down_since, state.now = control_plane().node_and_path(state.node_id)
    if node is None or node.get("LoggedOut") or node_key_expired(node):
        return NEEDS_LOGIN
    if not node.get("Authorized", True):
        return NEEDS_MACHINE_AUTH
    return RUNNING if path or state.running_in == started else STARTING


def health_messages(state: DaemonState, backend: str) -> list[str]:
    """The `Health` strings the real daemon shows for a node in this state (call `backend_state` first).

    From tailscale v1.90.6 `health/health.go` (`SetIPNState`, `updateBuiltinWarnablesLocked`) and
    `health/warnings.go`: for 5 s after the node is turned on, until it is Running, `warmingUpWarnable`;
    the relay warnings (`derp_health`).
    """
    if backend == NO_STATE:
        return []
    if not state.prefs["WantRunning"]:
        return [STOPPED_HEALTH]
    messages = []
    if backend == NEEDS_LOGIN and state.last_login_error:
        messages.append(f"You are logged out. The last login error was: {state.last_login_error}")
    on_since = state.turned_on[1] if state.turned_on else state.now
    if backend != RUNNING and state.now - on_since < WARMING_UP_SECONDS:
        messages.append(WARMING_UP_HEALTH)
    if backend in (RUNNING, STARTING):
        messages += derp_health(state, backend, on_since)
    return messages


def derp_health(state: DaemonState, backend: str, on_since: float) -> list[str]:
    """The relay warning of a node that cannot reach DERP, 10 s (`TimeToVisible`) after it became
    unhealthy: when the outage began, but never in the first 5 s after the node was turned on
    (`recentlyOn`).

    A Running node keeps its home region and cannot connect to it (`noDERPConnectionWarnable`); a
    Starting one never found a home region (`noDERPHomeWarnable`).
    """
    if state.derp_down_since is None:
        return []
    broken_since = max(state.derp_down_since, on_since + WARMING_UP_SECONDS)
    if state.now - broken_since < DERP_WARNING_SECONDS:
        return []
    if backend == RUNNING:
        return [
            f"Tailscale could not connect to the '{DERP_REGION_NAME}' relay server. Your Internet "
            "connection might be down, or the server might be temporarily unavailable."
        ]
    return ["Tailscale could not connect to any relay server. Check your Internet connection."]


def wait_until_started() -> None:
    """Block until the daemon has left NoState, as a client watching the IPN bus would."""
    remaining = STARTUP_SECONDS - (time.time() - started_at())
    if remaining > 0:
        time.sleep(remaining)


def start() -> None:
    """Start the daemon (idempotent): create the socket marker, reconnect a logged-in node."""
    sock = host_path(SOCKET_PATH)
    if sock.exists():
        return
    sock.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with locked_state() as state:
        sock.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}) + "\n")
        if state.logged_in and state.node_id is not None:
            control_plane().set_online(state.node_id, bool(state.prefs["WantRunning"]))


def stop() -> None:
    """Stop the daemon (idempotent): remove the socket marker; the node goes offline."""
    sock = host_path(SOCKET_PATH)
    if not sock.exists():
        return
    with locked_state() as state:
        sock.unlink(missing_ok=True)
        if state.node_id is not None:
            control_plane().set_online(state.node_id, False)
