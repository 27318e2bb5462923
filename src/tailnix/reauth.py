"""Logging a Running node in again when its tags or login server change, and telling whether it worked.

Control grants tags at a login only, and `tailscale up` moves a Running node to another login server only
with `--force-reauth` (tailscale v1.90.6 `cmd/tailscale/cli/up.go`). So a node that should carry other tags,
or answer to another control server, logs in again with the key, and control may refuse it: a tag the key's
owner does not own in the policy's `tagOwners` is refused at that login (`control/controlclient/direct.go`:
`RegisterResponse.Error`), and the node is then logged out. The switch that makes the node log in again is
confirmed only once it is Running with the new tags; otherwise the host is rolled back (tailnix.switch),
and its previous join unit logs it in again with the old ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tailnix.settings import TailscaleSettings
from tailnix.tailscale_flags import DEFAULT_CONTROL_URL

# The SaaS control server answers to both names (ipn.IsLoginServerSynonym).
_DEFAULT_CONTROL_URLS = frozenset({"", DEFAULT_CONTROL_URL, "https://login.tailscale.com"})

# What tailscaled puts in `Health` while logged out after a refused login (LoginStateWarnable,
# health/warnings.go in tailscale v1.90.6).
LOGIN_ERROR_HEALTH = "The last login error was: "


def granted_tags(status: dict[str, Any]) -> tuple[str, ...]:
    """The tags control granted the node (`Self.Tags` of `tailscale status --json`), sorted."""
    return tuple(sorted((status.get("Self") or {}).get("Tags") or []))


def login_error(status: dict[str, Any]) -> str:
    """The control server's words for the last refused login, "" when there is none."""
    for message in status.get("Health") or []:
        if LOGIN_ERROR_HEALTH in str(message):
            return str(message).split(LOGIN_ERROR_HEALTH, 1)[1].strip()
    return ""


def _same_server(one: str, other: str) -> bool:
    return one.rstrip("/") == other.rstrip("/") or {one, other} <= _DEFAULT_CONTROL_URLS


def _tag_list(tags: tuple[str, ...]) -> str:
    return ",".join(tags) or "none"


@dataclass(frozen=True)
class Reauthentication:
    """A Running node that must log in again: what it carries and what the settings want."""

    host: str
    granted: tuple[str, ...]
    wanted: tuple[str, ...]
    server: str
    wanted_server: str
    node_id: str = ""
    """The node's ID as its host reports it (`Self.ID`); on headscale, its numeric node ID."""

    @property
    def change(self) -> str:
        """What changes, as the plan shows it: `tags tag:server -> tag:web`."""
        parts = []
        if self.granted != self.wanted:
            parts.append(f"tags {_tag_list(self.granted)} -> {_tag_list(self.wanted)}")
        if not _same_server(self.server, self.wanted_server):
            parts.append(f"login server {self.server or DEFAULT_CONTROL_URL} -> {self.wanted_server}")
        return "; ".join(parts)

    def headscale_refusal(self) -> str | None:
        """Why a tag change on a headscale server cannot be made by logging in again, with the command that can.

        headscale v0.29.2 (`hscontrol/state/state.go`) gives a node that logs in with a pre-auth key the
        key's tags and rejects the tags it requests; only its admin command (`cmd/headscale/cli/nodes.go`,
        `headscale nodes tag -i ID -t TAGS`) changes them. None for Tailscale's server, or a server move.
        """
        if self.granted == self.wanted or self.wanted_server in _DEFAULT_CONTROL_URLS:
            return None
        if not _same_server(self.server, self.wanted_server):
            return None
        node = self.node_id if self.node_id.isdigit() else "<ID>"
        command = f"headscale nodes tag -i {node} -t {_tag_list(self.wanted)}"
        if node == "<ID>":
            command += " (the node's ID: `headscale nodes list`)"
        return (
            f"{self.host}: its tags cannot change from {_tag_list(self.granted)} to {_tag_list(self.wanted)} by "
            f"logging in again on {self.wanted_server}: headscale gives a node the tags of its pre-auth key and "
            f"refuses requested tags with one. On the headscale server run: {command}; then deploy again"
        )

    def refusal(self, status: dict[str, Any] | None) -> str | None:
        """Why the node did not come back as wanted after logging in again; None when it did."""
        if status is None:
            return f"{self.host} did not answer `tailscale status` after logging in again"
        backend = str(status.get("BackendState", "NoState"))
        granted = granted_tags(status)
        if backend == "Running" and granted == self.wanted:
            return None
        # The tags control granted and not: name the ones the settings ask for that the node lacks.
        missing = [tag for tag in self.wanted if tag not in granted] or list(self.wanted)
        error = login_error(status)
        if error:
            return f"control refused to log {self.host} in again with {_tag_list(tuple(missing))}: {error}"
        if backend != "Running":
            return (
                f"{self.host} is {backend}, not Running, after logging in again with {_tag_list(self.wanted)}"
            )
        extra = [tag for tag in granted if tag not in self.wanted]
        if extra and set(self.wanted) <= set(granted):
            # A tagged auth key gives its own tags at every login, whatever the node asks for.
            return (
                f"{self.host} logged in again with {_tag_list(granted)}, not {_tag_list(self.wanted)}: "
                f"its auth key carries {_tag_list(tuple(extra))}; use a key without them (or with the new tags)"
            )
        return (
            f"control did not grant {self.host} {_tag_list(tuple(missing))} "
            f"(the node carries {_tag_list(granted)})"
        )


def reauthentication(
    settings: TailscaleSettings, status: dict[str, Any] | None, prefs: dict[str, Any] | None
) -> Reauthentication | None:
    """The re-authentication a Running node needs for these settings; None when it needs none.

    Only a Running node: any other one logs in with the key anyway, with the tags of its settings.
    """
    if status is None or status.get("BackendState") != "Running":
        return None
    wanted_server = settings.login_server or DEFAULT_CONTROL_URL
    found = Reauthentication(
        host=settings.host,
        granted=granted_tags(status),
        wanted=tuple(sorted(settings.advertise_tags)),
        server=str((prefs or {}).get("ControlURL") or ""),
        wanted_server=wanted_server,
        node_id=str((status.get("Self") or {}).get("ID") or ""),
    )
    return found if found.change else None
