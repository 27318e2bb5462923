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
from tailnix.tailscale_flags import DEFAULT_CONTROL_URL, TAILSCALE_CONTROL_URLS

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
    return one.rstrip("/") == other.rstrip("/") or {one, other} <= TAILSCALE_CONTROL_URLS


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
    check_tags: bool = True
    """Whether the new login must grant `wanted`: not on headscale, which gives the key's tags (or keeps the
    node's) whatever the node asks for."""

    @property
    def moves(self) -> bool:
        """Whether the node moves to another login server."""
        return not _same_server(self.server, self.wanted_server)

    @property
    def change(self) -> str:
        """What changes, as the plan shows it: `tags tag:server -> tag:web`."""
        parts = []
        if self.granted != self.wanted:
            parts.append(f"tags {_tag_list(self.granted)} -> {_tag_list(self.wanted)}")
        if not _same_server(self.server, self.wanted_server):
            parts.append(f"login server {self.server or DEFAULT_CONTROL_URL} -> {self.wanted_server}")
        return "; ".join(parts)

    def refusal(self, status: dict[str, Any] | None) -> str | None:
        """Why the node did not come back as wanted after logging in again; None when it did."""
        if status is None:
            return f"{self.host} did not answer `tailscale status` after logging in again"
        backend = str(status.get("BackendState", "NoState"))
        granted = granted_tags(status)
        if backend == "Running" and (granted == self.wanted or not self.check_tags):
            return None
        # The tags control granted and not: name the ones the settings ask for that the node lacks.
        missing = [tag for tag in self.wanted if tag not in granted] or list(self.wanted)
        error = login_error(status)
        if error and not self.moves:
            return f"control refused to log {self.host} in again with {_tag_list(tuple(missing))}: {error}"
        if error:
            return f"{self.wanted_server} refused to log {self.host} in: {error}"
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

    Only a Running node: any other one logs in with the key anyway, with the tags of its settings. On
    headscale, tags never call for a new login (`HeadscaleRetag` changes them); a move there does, and
    whatever tags it gets are the key's.
    """
    if status is None or status.get("BackendState") != "Running":
        return None
    wanted_server = settings.login_server or DEFAULT_CONTROL_URL
    granted = granted_tags(status)
    found = Reauthentication(
        host=settings.host,
        granted=granted,
        wanted=granted if settings.on_headscale else tuple(sorted(settings.advertise_tags)),
        server=str((prefs or {}).get("ControlURL") or ""),
        wanted_server=wanted_server,
        check_tags=not settings.on_headscale,
    )
    return found if found.change else None


@dataclass(frozen=True)
class HeadscaleRetag:
    """A Running node on headscale whose tags differ from `tailscale_advertise_tags`: they change on the server.

    headscale v0.29.2 gives a node the tags of its pre-auth key at its first login and keeps them when it logs
    in again (`hscontrol/state/state.go`, `HandleNodeFromPreAuthKey`); only its admin command changes them
    (`cmd/headscale/cli/nodes.go`, `headscale nodes tag -i ID -t TAGS`, which replaces them).
    """

    host: str
    node_id: str
    """The node's headscale ID: its `Self.ID` (`NodeID.StableID`, the ID in decimal)."""
    granted: tuple[str, ...]
    wanted: tuple[str, ...]
    server: str

    @property
    def change(self) -> str:
        """What changes, as the plan shows it: `tags none -> tag:web`."""
        return f"tags {_tag_list(self.granted)} -> {_tag_list(self.wanted)}"

    @property
    def argv(self) -> list[str]:
        """The headscale command that makes the change."""
        return ["headscale", "nodes", "tag", "-i", self.node_id or "<ID>", "-t", ",".join(self.wanted)]

    def refusal(self) -> str:
        """Why the deploy does not change the tags itself, with the command that does."""
        command = " ".join(self.argv)
        if not self.node_id:
            command += " (the node's ID: `headscale nodes list`)"
        return (
            f"{self.host}: its tags cannot change from {_tag_list(self.granted)} to {_tag_list(self.wanted)} by "
            f"logging in again on {self.server}: headscale gives a node the tags of its pre-auth key and keeps "
            f"them at every new login. On the headscale server run: {command}; then deploy again "
            "(`tailnix deploy` runs it itself when tailnix_headscale_host names that server)"
        )


def headscale_retag(
    settings: TailscaleSettings, status: dict[str, Any] | None, prefs: dict[str, Any] | None
) -> HeadscaleRetag | None:
    """The tag change a Running node on headscale needs; None when it needs none.

    Only when `tailscale_advertise_tags` is set: left unset, the node keeps the tags its key gave it. A move
    to another login server is `reauthentication`'s, not this.
    """
    if not settings.on_headscale or not settings.advertise_tags:
        return None
    if status is None or status.get("BackendState") != "Running":
        return None
    server = str((prefs or {}).get("ControlURL") or "")
    if not _same_server(server, settings.login_server or ""):
        return None
    granted, wanted = granted_tags(status), tuple(sorted(set(settings.advertise_tags)))
    if granted == wanted:
        return None
    own_id = str((status.get("Self") or {}).get("ID") or "")
    return HeadscaleRetag(settings.host, own_id if own_id.isdigit() else "", granted, wanted, server)
