"""The lab's Tailscale control plane: auth keys, nodes and a login log, shared by every lab host.

Every host calls into the same directory at once, so all state lives in one JSON file that is
read and rewritten under an exclusive `flock`. Auth keys are stored as SHA-256 hashes only; the
clear key exists once, in the return value of `mint_key`.

The errors a node sees are the real control server's: an unknown, expired or revoked key is
"invalid key: API key does not exist", a single-use key used a second time is
"invalid key: API key <id> not valid".

The tailnet has a policy and settings of its own, as a real one does:

- `TAG_OWNERS`, the policy's `tagOwners`: a node may carry only tags the owner of its auth key owns
  (every lab key is the admin's); asking for another is refused with the SaaS text that headscale
  copies (`hscontrol/state/state.go`): "requested tags [tag:x] are invalid or not permitted";
- device approval (off by default): a node logged in with a key that is not pre-authorized waits,
  `Authorized` false, until `authorize` (the API's `POST /api/v2/device/{id}/authorized`);
- node keys expire after 180 days (`age_node_keys` moves time on for them) unless expiry is disabled
  for the device (`set_key_expiry_disabled`, the API's `POST /api/v2/device/{id}/key`);
- DERP: while `set_derp_reachable(False)`, a node has a path only to peers that are online; the lab's
  one DERP region is `DERP_REGION_NAME`. `set_path_blocked(HOSTNAME, True)` cuts one node off from both.
- the daemons' clock, which their health timers read: `let_time_pass` moves it on;
- routes: a node's advertised routes are usable by its peers only once approved, by an admin
  (`approve_routes`, the API's `POST /api/v2/device/{id}/routes`) or by the policy's `AUTO_APPROVERS`
  when the node advertises them. As the real policy's `autoApprovers` (tailscale.com/kb/1337, "autoApprovers";
  headscale `hscontrol/policy`): a route is approved when it lies inside a `routes` prefix whose approvers
  include one of the node's tags, and the exit routes (`0.0.0.0/0`, `::/0`) when `exitNode` names one.
  Approvals are kept when the node stops advertising a route (the API's `enabledRoutes` still list them);
  only advertised and approved routes carry traffic (the peers' `AllowedIPs` and `PrimaryRoutes`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

# Every `tailscale` call of a lab host imports this module: what only minting keys, logging in
# or writing times needs (hashlib, hmac, secrets, string, datetime) is imported where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

STATE_FILE = "control.json"
LOCK_FILE = "control.lock"
_PARSED: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}
"""The last parse of each control plane file this process read, by the file's (inode, size, mtime)."""
KEY_PREFIX = "tskey-auth-"
# headscale's pre-auth keys (`hscontrol/db/preauth_keys.go`): hskey-auth-{12-char prefix}-{64-char secret}.
HEADSCALE_KEY_PREFIX = "hskey-auth-"
HEADSCALE_PREFIX_LENGTH = 12
HEADSCALE_SECRET_LENGTH = 64
NODE_KEY_EXPIRY_DAYS = 180
MAGIC_DNS_SUFFIX = "tailnix-lab.ts.net"
TAILNET_NAME = "tailnix-lab.example"
IPV4_PREFIX = "100.64.0."
IPV6_PREFIX = "fd7a:115c:a1e0::"
SECONDS_PER_DAY = 86400.0
# The lab tailnet's policy (its `tagOwners`): the admin, who owns every auth key, owns these tags.
KEY_OWNER = "admin"
TAG_OWNERS: dict[str, tuple[str, ...]] = {"tag:server": (KEY_OWNER,), "tag:web": (KEY_OWNER,)}
# The lab tailnet's `autoApprovers`: tag:server nodes may route 10.0.0.0/8 without an admin; exit nodes
# always need one.
AUTO_APPROVERS: dict[str, Any] = {"routes": {"10.0.0.0/8": ["tag:server"]}, "exitNode": []}
EXIT_ROUTES = ("0.0.0.0/0", "::/0")


class KeyRejected(Exception):
    """The control server refused an auth key; `str()` is the message a node would log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        # One of: unknown, expired, revoked, used. The real server does not say which; tests may.
        self.reason = reason


class ParsedKey:
    """An auth key split into its public id and the whole key (for hashing)."""

    __slots__ = ("key_id", "whole")

    def __init__(self, key_id: str, whole: str) -> None:
        self.key_id = key_id
        self.whole = whole


def parse_auth_key(key: str) -> ParsedKey | None:
    """Split `tskey-auth-<id>-<secret>` or headscale's `hskey-auth-<prefix>-<secret>`; None otherwise."""
    if key.startswith(HEADSCALE_KEY_PREFIX):
        # Fixed-length parsing, as headscale does (`hscontrol/db/preauth_keys.go`): the URL-safe
        # prefix may itself hold dashes.
        rest = key[len(HEADSCALE_KEY_PREFIX) :]
        if (
            len(rest) != HEADSCALE_PREFIX_LENGTH + 1 + HEADSCALE_SECRET_LENGTH
            or rest[HEADSCALE_PREFIX_LENGTH] != "-"
        ):
            return None
        return ParsedKey(key_id=rest[:HEADSCALE_PREFIX_LENGTH], whole=key)
    if not key.startswith(KEY_PREFIX):
        return None
    rest = key[len(KEY_PREFIX) :]
    key_id, sep, secret = rest.partition("-")
    if not sep or not key_id or not secret:
        return None
    return ParsedKey(key_id=key_id, whole=key)


def key_hash(key: str) -> str:
    """The only form of an auth key the control plane keeps."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()


def iso_time(epoch: float) -> str:
    """Format a time the way Go's encoding/json writes a UTC `time.Time`."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tags_not_permitted(tags: tuple[str, ...] | list[str], owner: str = KEY_OWNER) -> list[str]:
    """The tags among `tags` that the policy does not let `owner` apply, in the order asked."""
    return [tag for tag in tags if owner not in TAG_OWNERS.get(tag, ())]


def tags_refusal(refused: list[str]) -> str:
    """The control server's words for tags it will not grant (Go's `%v` of a []string)."""
    return f"requested tags [{' '.join(refused)}] are invalid or not permitted"


def _random_id(length: int) -> str:
    import secrets
    import string

    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _empty_state() -> dict[str, Any]:
    return {
        "keys": {},
        "nodes": [],
        "logins": [],
        "rejections": [],
        "next_node_number": 1,
        "settings": dict(DEFAULT_SETTINGS),
    }


# The region of the lab's DERP map every node takes as its home (derper's RegionName).
DERP_REGION_NAME = "Lab"

# The tailnet's settings in the admin console: device approval off, DERP servers reachable.
DEFAULT_SETTINGS: dict[str, bool] = {"device_approval": False, "derp_reachable": True}


class ControlPlane:
    """The lab's coordination server, stored under `root` (usually `/run/tailnix-lab/control`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Yield the whole state under an exclusive lock and write it back afterwards."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            path = self.root / STATE_FILE
            state = json.loads(path.read_text()) if path.exists() else _empty_state()
            before = json.dumps(state, sort_keys=True)
            yield state
            after = json.dumps(state, sort_keys=True)
            if after != before:
                # Write-then-rename so a reader without the lock never sees half a file.
                tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
                tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
        finally:
            os.close(lock_fd)

    @contextmanager
    def _reading(self) -> Iterator[dict[str, Any]]:
        """Yield the whole state to read (never to change) under a shared lock.

        Every `tailscale status` of every lab host reads the control plane, which holds every node of the
        lab: parsing it, and dumping it twice to compare, under one exclusive lock, cost each call time
        that grew with the lab and made the calls of all hosts wait for each other. A reader shares the
        lock, and a process (the host's resident emulator server) parses the file again only when a writer
        has replaced it (a new inode, size or time: `_locked` writes a new file and renames it).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
            path = self.root / STATE_FILE
            try:
                found = path.stat()
            except FileNotFoundError:
                yield _empty_state()
                return
            version = (found.st_ino, found.st_size, found.st_mtime_ns)
            cached = _PARSED.get(path)
            if cached is None or cached[0] != version:
                cached = _PARSED[path] = (version, json.loads(path.read_text()))
            yield cached[1]
        finally:
            os.close(lock_fd)

    def mint_key(
        self,
        *,
        reusable: bool = True,
        ephemeral: bool = False,
        preauthorized: bool = True,
        tags: tuple[str, ...] = (),
        expiry_days: float = 90,
    ) -> str:
        """Create an auth key and return it in clear, once (`tskey-auth-<id>-<secret>`)."""
        from tailnix.tailnet_names import check_tag

        for tag in tags:
            reason = check_tag(tag)
            if reason:
                raise ValueError(f"auth key tag {tag!r}: {reason}")
        refused = tags_not_permitted(tags)
        if refused:
            raise ValueError(tags_refusal(refused))
        key_id = f"k{_random_id(10)}CNTRL"
        key = f"{KEY_PREFIX}{key_id}-{_random_id(32)}"
        now = time.time()
        with self._locked() as state:
            state["keys"][key_id] = {
                "id": key_id,
                "hash": key_hash(key),
                "reusable": reusable,
                "ephemeral": ephemeral,
                "preauthorized": preauthorized,
                "tags": list(tags),
                "created": now,
                "expires": now + expiry_days * SECONDS_PER_DAY,
                "revoked": False,
                "uses": 0,
            }
        return key

    def add_headscale_user(self, name: str) -> dict[str, Any]:
        """Create a user of the headscale stand-in (`headscale users create NAME`) and return it."""
        now = time.time()
        with self._locked() as state:
            headscale = _headscale(state)
            if any(user["name"] == name for user in headscale["users"]):
                raise ValueError(f"creating user: user {name!r} already exists")
            user = {"id": headscale["next_user_id"], "name": name, "created": now}
            headscale["next_user_id"] += 1
            headscale["users"].append(user)
            return dict(user)

    def headscale_users(self) -> list[dict[str, Any]]:
        """The headscale stand-in's users, by ID."""
        with self._reading() as state:
            return [dict(user) for user in _headscale(state)["users"]]

    def mint_headscale_key(
        self,
        *,
        user_id: int,
        reusable: bool,
        ephemeral: bool,
        tags: tuple[str, ...],
        expires: float,
    ) -> tuple[str, dict[str, Any]]:
        """Create a headscale pre-auth key of user `user_id` (0: none, a tagged key); return it in clear, once,
        and its record.

        Raises LookupError("user not found") for an unknown user, as headscale's `GetUserByID` does.
        """
        import secrets

        alphabet = string_url_safe()
        prefix = "".join(secrets.choice(alphabet) for _ in range(HEADSCALE_PREFIX_LENGTH))
        secret = "".join(secrets.choice(alphabet) for _ in range(HEADSCALE_SECRET_LENGTH))
        key = f"{HEADSCALE_KEY_PREFIX}{prefix}-{secret}"
        now = time.time()
        with self._locked() as state:
            headscale = _headscale(state)
            # User 0 is none: a tagged key of the server's own, as `CreatePreAuthKey` makes for `--user 0`.
            user = next((u for u in headscale["users"] if u["id"] == user_id), None)
            if user is None and user_id != 0:
                raise LookupError("user not found")
            record = {
                "id": prefix,
                "hash": key_hash(key),
                "reusable": reusable,
                "ephemeral": ephemeral,
                "preauthorized": True,
                "tags": sorted(set(tags)),
                "created": now,
                "expires": expires,
                "revoked": False,
                "uses": 0,
                "headscale_id": headscale["next_key_id"],
                "headscale_user": dict(user) if user is not None else None,
            }
            headscale["next_key_id"] += 1
            state["keys"][prefix] = record
        return key, dict(record)

    def headscale_keys(self) -> list[dict[str, Any]]:
        """The headscale stand-in's pre-auth keys (their records, no key), by ID."""
        with self._locked() as state:
            keys = [dict(k) for k in state["keys"].values() if "headscale_id" in k]
        return sorted(keys, key=lambda k: int(k["headscale_id"]))

    def expire_headscale_key(self, key_id: int) -> None:
        """`headscale preauthkeys expire --id ID`: the key expires now; an unknown ID changes nothing, as the
        real database update of no row does (v0.29.2 `hscontrol/db/preauth_keys.go`, `ExpirePreAuthKey`)."""
        with self._locked() as state:
            for record in state["keys"].values():
                if record.get("headscale_id") == key_id:
                    record["expires"] = time.time()

    def headscale_nodes(self) -> list[dict[str, Any]]:
        """The nodes headscale knows (those that logged in with one of its keys), by ID, with the records of
        their keys (`AuthKey`) and owners (`HeadscaleUser`)."""
        with self._locked() as state:
            nodes = []
            for node in state["nodes"]:
                if "HeadscaleID" in node:
                    keys = [
                        k for k in state["keys"].values() if k.get("headscale_id") == node.get("HeadscaleKey")
                    ]
                    nodes.append({**node, "AuthKey": dict(keys[0]) if keys else None})
        return sorted(nodes, key=lambda n: int(n["HeadscaleID"]))

    def delete_headscale_node(self, headscale_id: int) -> bool:
        """`headscale nodes delete`: remove the node of that ID; False when headscale knows none."""
        with self._locked() as state:
            for node in state["nodes"]:
                if node.get("HeadscaleID") == headscale_id:
                    state["nodes"].remove(node)
                    return True
        return False

    def set_headscale_tags(self, headscale_id: int, tags: list[str]) -> dict[str, Any]:
        """`headscale nodes tag`: replace the node's tags; it is then owned by them, not by a user.

        As v0.29.2 `hscontrol/state/state.go` `SetNodeTags`: LookupError("node not found") for an unknown ID,
        ValueError with the refusal for a tag the policy does not define (its `tagOwners`).
        """
        with self._locked() as state:
            node = next((n for n in state["nodes"] if n.get("HeadscaleID") == headscale_id), None)
            if node is None:
                raise LookupError("node not found")
            invalid = [tag for tag in tags if not tag.startswith("tag:") or tag not in TAG_OWNERS]
            if invalid:
                raise ValueError(tags_refusal(invalid))
            node["Tags"] = sorted(set(tags))
            node["HeadscaleUser"] = None
            return dict(node)

    def key(self, key_id: str) -> dict[str, Any] | None:
        """The record of one auth key by its id (the key itself is never kept, only its hash)."""
        with self._reading() as state:
            record = state["keys"].get(key_id)
        return dict(record) if isinstance(record, dict) else None

    def _key_record(self, state: dict[str, Any], key: str) -> dict[str, Any] | None:
        parsed = parse_auth_key(key)
        if parsed is None:
            return None
        import hmac

        record: dict[str, Any] | None = state["keys"].get(parsed.key_id)
        if record is None or not hmac.compare_digest(record["hash"], key_hash(parsed.whole)):
            return None
        return record

    def expire_key(self, key: str) -> None:
        """Make a key expired from now on (nodes that joined with it stay joined)."""
        with self._locked() as state:
            record = self._key_record(state, key)
            if record is None:
                raise KeyError("no such auth key")
            record["expires"] = time.time() - 1

    def revoke_key(self, key: str) -> None:
        """Revoke a key: no new joins with it."""
        with self._locked() as state:
            record = self._key_record(state, key)
            if record is None:
                raise KeyError("no such auth key")
            record["revoked"] = True

    def login(self, key: str, *, node_key: str, hostname: str, tags: tuple[str, ...] = ()) -> dict[str, Any]:
        """Register or re-register the node holding `node_key` with an auth key, asking for `tags`.

        Returns the node. Raises `KeyRejected` with the real server's message when the key is
        unknown, expired, revoked, or single-use and already used, or when the policy does not let
        the key's owner apply a requested tag (a node already registered is then left as it was).
        """
        now = time.time()
        rejection: KeyRejected | None = None
        with self._locked() as state:
            record = self._key_record(state, key)
            parsed = parse_auth_key(key)
            refused = tags_not_permitted(tags)
            if record is None:
                rejection = KeyRejected("invalid key: API key does not exist", "unknown")
            elif record["revoked"]:
                rejection = KeyRejected("invalid key: API key does not exist", "revoked")
            elif record["expires"] <= now:
                rejection = KeyRejected("invalid key: API key does not exist", "expired")
            elif not record["reusable"] and record["uses"] > 0:
                rejection = KeyRejected(f"invalid key: API key {record['id']} not valid", "used")
            elif refused:
                rejection = KeyRejected(tags_refusal(refused), "tags")
            elif (
                tags
                and "headscale_id" in record
                and _new_on_headscale(self._find_node(state, node_key=node_key))
            ):
                # headscale gives a new node its pre-auth key's tags and rejects those it asks for
                # (v0.29.2 `hscontrol/state/state.go`: "PreAuthKey nodes get their tags from the key itself").
                rejection = KeyRejected(tags_refusal(list(tags)), "tags")
            if rejection is not None or record is None:
                rejection = rejection or KeyRejected("invalid key: API key does not exist", "unknown")
                state["rejections"].append(
                    {
                        "time": iso_time(now),
                        "key_id": parsed.key_id if parsed else None,
                        "hostname": hostname,
                        "reason": rejection.reason,
                    }
                )
            else:
                return self._register(state, record, now, node_key=node_key, hostname=hostname, tags=tags)
        # Raised once the lock is gone, so that the rejection is kept in the log.
        raise rejection

    def _register(
        self,
        state: dict[str, Any],
        record: dict[str, Any],
        now: float,
        *,
        node_key: str,
        hostname: str,
        tags: tuple[str, ...],
    ) -> dict[str, Any]:
        """The accepted login of `login`, under its lock: a new node, or the same one again."""
        record["uses"] += 1
        node = self._find_node(state, node_key=node_key)
        if node is None:
            number = state["next_node_number"]
            state["next_node_number"] = number + 1
            node = {
                "ID": f"n{number:04d}{_random_id(6)}CNTRL",
                "Number": number,
                "NodeKey": node_key,
                "Created": iso_time(now),
                "TailscaleIPs": [f"{IPV4_PREFIX}{number}", f"{IPV6_PREFIX}{number:x}"],
            }
            state["nodes"].append(node)
        node["HostName"] = hostname
        node["DNSName"] = self._unique_dns_name(state, hostname, node["ID"])
        if "headscale_id" in record:
            _register_on_headscale(node, record)
        else:
            node.pop("HeadscaleID", None)
            node.pop("HeadscaleUser", None)
            node["Tags"] = sorted(set(record["tags"]) | set(tags))
        node["KeyID"] = record["id"]
        node["Ephemeral"] = bool(record["ephemeral"])
        # A machine once approved stays approved; a new one waits when the tailnet asks for it.
        approval = _settings(state)["device_approval"]
        node["Authorized"] = bool(node.get("Authorized")) or not approval or bool(record["preauthorized"])
        if not node.get("KeyExpiryDisabled"):
            _set_key_expiry(node, now + NODE_KEY_EXPIRY_DAYS * SECONDS_PER_DAY)
        node["LoggedOut"] = False
        node["Online"] = True
        node.setdefault("AdvertisedRoutes", [])
        state["logins"].append(
            {
                "time": iso_time(now),
                "node": node["ID"],
                "hostname": hostname,
                "key_id": record["id"],
            }
        )
        return dict(node)

    @staticmethod
    def _find_node(
        state: dict[str, Any], *, node_key: str | None = None, node_id: str | None = None
    ) -> dict[str, Any] | None:
        nodes: list[dict[str, Any]] = state["nodes"]
        for node in nodes:
            if node_key is not None and node["NodeKey"] == node_key:
                return node
            if node_id is not None and node["ID"] == node_id:
                return node
        return None

    @staticmethod
    def _unique_dns_name(state: dict[str, Any], hostname: str, node_id: str) -> str:
        """Give a second node with the same name a `-1` suffix, as the real tailnet does."""
        label = sanitize_label(hostname) or "localhost"
        taken = {n["DNSName"] for n in state["nodes"] if n["ID"] != node_id and not n.get("LoggedOut")}
        candidate, n = label, 0
        while f"{candidate}.{MAGIC_DNS_SUFFIX}." in taken:
            n += 1
            candidate = f"{label}-{n}"
        return f"{candidate}.{MAGIC_DNS_SUFFIX}."

    def set_online(self, node_id: str, online: bool) -> None:
        """Record whether the node's daemon runs and wants to be connected."""
        with self._locked() as state:
            node = self._find_node(state, node_id=node_id)
            if node is not None and not node.get("LoggedOut"):
                node["Online"] = online
                if not online:
                    node["LastSeen"] = iso_time(time.time())

    def update_hostinfo(self, node_id: str, *, hostname: str, advertised_routes: list[str]) -> None:
        """Take a node's new host name and advertised routes (what `tailscale set` sends).

        Tags are never taken here: control grants them at a login only, against the policy.
        """
        with self._locked() as state:
            node = self._find_node(state, node_id=node_id)
            if node is None:
                return
            if hostname != node.get("HostName"):
                node["HostName"] = hostname
                node["DNSName"] = self._unique_dns_name(state, hostname, node_id)
            node["AdvertisedRoutes"] = list(advertised_routes)
            approved = set(node.get("ApprovedRoutes") or [])
            approved |= set(auto_approved(advertised_routes, node.get("Tags") or []))
            node["ApprovedRoutes"] = sorted(approved)

    def approve_routes(self, node_id: str, routes: list[str]) -> None:
        """Set a device's approved routes (the API's `POST /api/v2/device/{id}/routes`)."""
        with self._locked() as state:
            self._require_node(state, node_id)["ApprovedRoutes"] = sorted(set(routes))

    def logout(self, node_id: str) -> None:
        """Expire the node's key; an ephemeral node disappears from the tailnet."""
        with self._locked() as state:
            node = self._find_node(state, node_id=node_id)
            if node is None:
                return
            if node.get("Ephemeral"):
                state["nodes"].remove(node)
                return
            node["LoggedOut"] = True
            node["Online"] = False
            _set_key_expiry(node, time.time())

    def delete_node(self, node_id: str) -> bool:
        """Remove a device from the tailnet (the API's DELETE /api/v2/device/{id}); False when unknown."""
        with self._locked() as state:
            node = self._find_node(state, node_id=node_id)
            if node is None:
                return False
            state["nodes"].remove(node)
            return True

    # -- the tailnet's settings and what an admin does to devices --------------------------------

    def set_device_approval(self, required: bool) -> None:
        """Turn the tailnet's device approval on or off (new devices only; approved ones stay)."""
        with self._locked() as state:
            _settings(state)["device_approval"] = required

    def authorize(self, node_id: str) -> None:
        """Approve a device waiting in NeedsMachineAuth."""
        with self._locked() as state:
            self._require_node(state, node_id)["Authorized"] = True

    def set_key_expiry_disabled(self, node_id: str, disabled: bool) -> None:
        """Disable or enable again the expiry of a device's node key.

        The original expiry is kept meanwhile: enabled again, the key expires then, or has expired.
        """
        with self._locked() as state:
            self._require_node(state, node_id)["KeyExpiryDisabled"] = disabled

    def set_tags(self, node_id: str, tags: tuple[str, ...]) -> None:
        """Replace a device's tags (the API's `POST /api/v2/device/{id}/tags`; the caller checks the policy)."""
        with self._locked() as state:
            self._require_node(state, node_id)["Tags"] = sorted(set(tags))

    def set_node_key_expiry(self, node_id: str, *, days_from_now: float) -> None:
        """Make one device's node key expire `days_from_now` days from now (negative: already expired)."""
        with self._locked() as state:
            _set_key_expiry(self._require_node(state, node_id), time.time() + days_from_now * SECONDS_PER_DAY)

    def age_node_keys(self, *, days: float, node_ids: tuple[str, ...] | None = None) -> None:
        """Let `days` pass for every node key, or those of `node_ids` (one whose expiry is disabled keeps
        its original expiry, which passes too)."""
        with self._locked() as state:
            for node in state["nodes"]:
                if node_ids is not None and node["ID"] not in node_ids:
                    continue
                if "KeyExpiresAt" in node:
                    _set_key_expiry(node, node["KeyExpiresAt"] - days * SECONDS_PER_DAY)

    def let_time_pass(self, seconds: float) -> None:
        """Move the daemons' clock on (what their health timers see: `now`); node keys age with
        `age_node_keys`."""
        with self._locked() as state:
            state["clock_offset"] = float(state.get("clock_offset") or 0.0) + seconds

    def now(self) -> float:
        """The time on the daemons' clock: the real time plus what `let_time_pass` added."""
        with self._reading() as state:
            return _now(state)

    def set_derp_reachable(self, reachable: bool) -> None:
        """Make the DERP relays reachable or not for every node of the tailnet (from `now` on)."""
        with self._locked() as state:
            _settings(state)["derp_reachable"] = reachable
            if reachable:
                state["derp_down_since"] = None
            elif state.get("derp_down_since") is None:
                state["derp_down_since"] = _now(state)

    def set_path_blocked(self, hostname: str, blocked: bool) -> None:
        """Cut the node named `hostname` off from DERP and its peers (or let it reach them again), as a
        firewall that lets only control through would."""
        with self._locked() as state:
            cut: dict[str, float] = state.setdefault("blocked_paths", {})
            if not blocked:
                cut.pop(hostname, None)
            elif hostname not in cut:
                cut[hostname] = _now(state)

    def node_and_path(self, node_id: str) -> tuple[dict[str, Any] | None, bool, float | None, float]:
        """One node; whether it has a live path (a reachable DERP or another node online); since when
        it has been unable to reach DERP (None while it can); and `now`."""
        with self._reading() as state:
            node = self._find_node(state, node_id=node_id)
            blocked = state.get("blocked_paths", {})
            cut = blocked.get(node["HostName"]) if node is not None else None
            if cut is not None:
                return dict(node or {}), False, float(cut), _now(state)
            derp = _settings(state)["derp_reachable"]
            path = derp or any(
                n["ID"] != node_id
                and n.get("Online")
                and not n.get("LoggedOut")
                and n["HostName"] not in blocked
                for n in state["nodes"]
            )
            down_since = None if derp else float(state.get("derp_down_since") or 0.0)
            return (dict(node) if node is not None else None), path, down_since, _now(state)

    def _require_node(self, state: dict[str, Any], node_id: str) -> dict[str, Any]:
        node = self._find_node(state, node_id=node_id)
        if node is None:
            raise KeyError(f"no node {node_id}")
        return node

    def node(self, node_id: str) -> dict[str, Any] | None:
        """Return one node, or None when the control plane does not know it."""
        with self._reading() as state:
            node = self._find_node(state, node_id=node_id)
            return dict(node) if node is not None else None

    def nodes(self) -> list[dict[str, Any]]:
        """Every node the control plane knows, logged out ones included."""
        with self._reading() as state:
            return [dict(n) for n in state["nodes"]]

    def logins(self) -> list[dict[str, Any]]:
        """The log of successful logins: time, node id, host name, key id."""
        with self._reading() as state:
            return [dict(e) for e in state["logins"]]

    def rejections(self) -> list[dict[str, Any]]:
        """The log of refused logins: time, key id (None when malformed), host name, reason."""
        with self._reading() as state:
            return [dict(e) for e in state["rejections"]]


def auto_approved(routes: list[str], tags: list[str]) -> list[str]:
    """The routes among `routes` that the policy's `AUTO_APPROVERS` approve for a node with `tags`."""
    import ipaddress

    approved = []
    for route in routes:
        if route in EXIT_ROUTES:
            if set(AUTO_APPROVERS["exitNode"]) & set(tags):
                approved.append(route)
            continue
        network = ipaddress.ip_network(route)
        for prefix, approvers in AUTO_APPROVERS["routes"].items():
            covering = ipaddress.ip_network(prefix)
            if (
                network.version == covering.version
                and network.subnet_of(covering)  # type: ignore[arg-type]
                and set(approvers) & set(tags)
            ):
                approved.append(route)
                break
    return approved


def enabled_routes(node: dict[str, Any]) -> list[str]:
    """The node's routes its peers may use: advertised and approved."""
    approved = set(node.get("ApprovedRoutes") or [])
    return [route for route in node.get("AdvertisedRoutes") or [] if route in approved]


def _new_on_headscale(node: dict[str, Any] | None) -> bool:
    """Whether a login with a headscale key registers a new node there (not one headscale knows)."""
    return node is None or "HeadscaleID" not in node


def _register_on_headscale(node: dict[str, Any], record: dict[str, Any]) -> None:
    """Tags and owner of a node that logs in with a headscale pre-auth key (v0.29.2 `hscontrol/state/state.go`,
    `HandleNodeFromPreAuthKey`, `createAndSaveNewNode`).

    A new node gets the key's tags (tagged key: owned by its tags) or the key's user; the tags it asks for
    are refused before (`login`). A node headscale knows keeps its tags and owner at a new login, whatever
    it asks for ("Tags from PreAuthKey are only applied during initial registration"), except that a tagged
    key converts a user-owned node to tagged.
    """
    owner = record["headscale_user"]
    if _new_on_headscale(node):
        node["HeadscaleID"] = node["Number"]
        node["Tags"] = list(record["tags"])
        node["HeadscaleUser"] = None if record["tags"] else owner
    elif record["tags"] and not node.get("Tags"):
        node["Tags"] = list(record["tags"])
        node["HeadscaleUser"] = None
    node["HeadscaleKey"] = record["headscale_id"]


def stable_id(node: dict[str, Any]) -> str:
    """The node's ID as its peers and itself see it (`Self.ID`): on headscale its numeric ID in decimal
    (v0.29.2 `hscontrol/types/node.go`, `NodeID.StableID`), else the control plane's `n...CNTRL`."""
    return str(node["HeadscaleID"]) if "HeadscaleID" in node else str(node["ID"])


def string_url_safe() -> str:
    """The alphabet of Go's URL-safe base64, which headscale draws its key parts from."""
    import string

    return string.ascii_letters + string.digits + "-_"


def _headscale(state: dict[str, Any]) -> dict[str, Any]:
    """The headscale stand-in's own records (users, key numbers), beside the shared keys and nodes."""
    headscale: dict[str, Any] = state.setdefault("headscale", {})
    headscale.setdefault("users", [])
    headscale.setdefault("next_user_id", 1)
    headscale.setdefault("next_key_id", 1)
    return headscale


def _now(state: dict[str, Any]) -> float:
    return time.time() + float(state.get("clock_offset") or 0.0)


def _settings(state: dict[str, Any]) -> dict[str, bool]:
    settings: dict[str, bool] = state.setdefault("settings", dict(DEFAULT_SETTINGS))
    for name, value in DEFAULT_SETTINGS.items():
        settings.setdefault(name, value)
    return settings


def _set_key_expiry(node: dict[str, Any], epoch: float) -> None:
    node["KeyExpiresAt"] = epoch
    node["KeyExpiry"] = iso_time(epoch)


def node_key_expired(node: dict[str, Any], now: float | None = None) -> bool:
    """True when the node's key has expired (never when its expiry is disabled)."""
    if node.get("KeyExpiryDisabled"):
        return False
    expires = node.get("KeyExpiresAt")
    return expires is not None and float(expires) <= (time.time() if now is None else now)


def sanitize_label(hostname: str) -> str:
    """Turn an OS host name into a DNS label the way Tailscale names machines."""
    first = hostname.split(".", 1)[0].lower()
    out = []
    for ch in first:
        if ch.isascii() and (ch.isalnum() or ch == "-"):
            out.append(ch)
        elif ch in " _@":
            out.append("-")
    return "".join(out).strip("-")[:63]
