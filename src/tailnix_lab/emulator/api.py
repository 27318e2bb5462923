"""The lab's stand-in for the Tailscale API: OAuth clients that mint auth keys of the lab's control plane.

It speaks the documented shapes of the calls `tailnix rotate-key --mint` makes, on loopback only:

- `POST /api/v2/oauth/token` (client credentials, in the form body or as HTTP Basic): 200
  `{"access_token", "token_type": "Bearer", "expires_in": 3600, "scope"}`, or 401 `{"error":
  "invalid_client", "error_description"}`;
- `POST /api/v2/tailnet/-/keys` with `Authorization: Bearer TOKEN` and `{"capabilities": {"devices":
  {"create": {"reusable", "ephemeral", "preauthorized", "tags"}}}, "expirySeconds", "description"}`: 200
  `{"id", "key", "created", "expires", "capabilities", "description"}`, 401 for a bad token, 400
  `{"message"}` for a key without tags (an OAuth client mints tagged keys only), a tag the client may
  not apply, or an expiry over 90 days;
- `POST /api/v2/device/{id}/authorized` with `{"authorized": true}`: approve a device that waits in
  NeedsMachineAuth (device approval); `POST /api/v2/device/{id}/key` with `{"keyExpiryDisabled": BOOL}`:
  turn the expiry of its node key off or on; `POST /api/v2/device/{id}/tags` with `{"tags": [...]}`:
  replace its tags, 400 `{"message": "requested tags [...] are invalid or not permitted"}` for a tag the
  client may not apply or the policy's tagOwners do not know. 200 `{}`, 401 for a bad token, 404 for an
  unknown device;
- `GET /api/v2/tailnet/-/devices` (`{"devices": [...]}`) and `GET /api/v2/device/{id}`: devices in the
  API's shape (`nodeId`, `addresses`, `keyExpiryDisabled`, `expires`, `authorized`, `tags`...), from the
  control plane's nodes; `?fields=all` adds the routes.
- `GET /api/v2/device/{id}/routes` and `POST /api/v2/device/{id}/routes` with `{"routes": [...]}` (the
  routes to approve, replacing those approved before): 200 `{"advertisedRoutes", "enabledRoutes"}`
  (`publicapi/device.md`, "Get device routes", "Set device routes"); a route that is not a prefix is 400.

Scopes: an OAuth client has scopes (`auth_keys`, `devices:core`, `devices:core:read`, `all`, `all:read`,
and the legacy `devices`, which covers both), its tokens carry them, and a call outside them is 403
`{"message": "calling actor does not have enough permissions to perform this function"}`, as the real
API answers (tailscale/tailscale#15969, tailscale/github-action#301).

- `GET /api/v2/tailnet/-/devices`: 200 `{"devices": [{"id", "nodeId", "hostname", "name", "addresses",
  "tags", ...}]}`; `DELETE /api/v2/device/{id}` (the nodeId or the legacy numeric id): 200 with an empty
  body, 404 `{"message"}` for an unknown device (the API v2 documentation, "Delete device"). A deleted
  device is gone from the control plane: its node must log in again as a new one.

While it runs it writes its address into the control plane's directory (`oauthkey.API_URL_FILE`): the
lab's hosts have no internet, and their `tailscale up` with an OAuth client secret reaches
https://api.tailscale.com there. A secret names its client (`tskey-client-<id>-...`), so the token call
takes it with any client id, as the CLI's "some-client-id".

Every request is kept (method, path, and the names of its headers and fields, never their values), so
that tests can see what was asked.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tailnix_lab.emulator.control import (
    ControlPlane,
    parse_auth_key,
    tags_not_permitted,
    tags_refusal,
)
from tailnix_lab.emulator.oauthkey import API_URL_FILE
from tailnix_lab.emulator.tailscale import LAB_LOGIN, LONG_VERSION, TAGGED_LOGIN

MAX_EXPIRY_SECONDS = 90 * 86400
TOKEN_LIFETIME_SECONDS = 3600
DEFAULT_SCOPES = ("auth_keys", "devices:core")
NOT_PERMITTED = "calling actor does not have enough permissions to perform this function"
# How often the serving loop looks for shutdown(): a test's teardown waits at most this long.
SHUTDOWN_POLL_SECONDS = 0.02
DEVICE_PREFIX = "/api/v2/device/"


@dataclass
class OAuthClientRecord:
    client_id: str
    secret: str = field(repr=False)
    tags: tuple[str, ...]
    """The tags this client may put on the keys it mints and on devices (its tagOwners)."""
    scopes: tuple[str, ...] = DEFAULT_SCOPES


@dataclass
class SeenRequest:
    method: str
    path: str
    header_names: list[str]
    field_names: list[str]


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TailscaleApi:
    """A running stand-in API on 127.0.0.1; use as a context manager."""

    def __init__(self, control_dir: Path) -> None:
        self.control = ControlPlane(control_dir)
        self.clients: dict[str, OAuthClientRecord] = {}
        self.tokens: dict[str, tuple[str, float]] = {}
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, answer = api.answer(self.path, dict(self.headers.items()), body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802
                self._send(*api.answer_get(self.path, dict(self.headers.items())))

            def do_DELETE(self) -> None:  # noqa: N802
                self._send(*api.delete_device(self.path, dict(self.headers.items())))

            def _send(self, status: int, answer: dict[str, Any] | None) -> None:
                # The real API answers a deleted device with 200 and an empty body.
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if answer is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> TailscaleApi:
        self._thread.start()
        # The lab's hosts have no internet: their `tailscale up` reaches https://api.tailscale.com here.
        self.control.root.mkdir(parents=True, exist_ok=True)
        (self.control.root / API_URL_FILE).write_text(self.url + "\n")
        return self

    def __exit__(self, *_exc: object) -> None:
        (self.control.root / API_URL_FILE).unlink(missing_ok=True)
        self._server.shutdown()
        self._server.server_close()

    def add_client(
        self, tags: tuple[str, ...] = ("tag:server",), scopes: tuple[str, ...] = DEFAULT_SCOPES
    ) -> tuple[str, str]:
        """A new OAuth client with `scopes`, allowed to apply `tags`; returns its id and secret."""
        client_id = f"k{secrets.token_hex(5)}CNTRL"
        # Letters and digits only, as Tailscale's secrets are (token_urlsafe's - and _ are not).
        secret = f"tskey-client-{client_id}-{secrets.token_hex(16)}"
        self.clients[client_id] = OAuthClientRecord(client_id, secret, tags, scopes)
        return client_id, secret

    def issue_token(self, client_id: str) -> str:
        """An access token for a client, as the OAuth token call gives it (one hour)."""
        token = f"tskey-api-{secrets.token_urlsafe(24)}"
        with self._lock:
            self.tokens[token] = (client_id, time.time() + TOKEN_LIFETIME_SECONDS)
        return token

    # -- the calls -----------------------------------------------------------------------------------

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        if path == "/api/v2/oauth/token":
            fields = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
            self._seen("POST", path, headers, list(fields))
            return self._token(headers, fields)
        is_keys = path.startswith("/api/v2/tailnet/") and path.endswith("/keys")
        is_device = path.startswith("/api/v2/device/") and path.count("/") == 5
        if is_keys or is_device:
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = None
            self._seen("POST", path, headers, list(request) if isinstance(request, dict) else [])
            if not isinstance(request, dict):
                return 400, {"message": "request body is not a JSON object"}
            if is_keys:
                return self._create_key(headers, request)
            device_id, action = path.split("/")[4:6]
            return self._device(headers, device_id, action, request)
        self._seen("POST", path, headers, [])
        return 404, {"message": "not found"}

    def _seen(self, method: str, path: str, headers: dict[str, str], fields: list[str]) -> None:
        with self._lock:
            self.requests.append(SeenRequest(method, path, sorted(headers), sorted(fields)))

    def _token(self, headers: dict[str, str], fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id, secret = fields.get("client_id", ""), fields.get("client_secret", "")
        basic = headers.get("Authorization", "")
        if basic.startswith("Basic "):
            decoded = base64.b64decode(basic[6:]).decode(errors="replace")
            client_id, _, secret = decoded.partition(":")
        if fields.get("grant_type") != "client_credentials":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "grant_type must be client_credentials",
            }
        if secret.startswith("tskey-client-"):
            # The secret names its client (`tskey-client-<id>-...`): the tailscale CLI sends the client id
            # "some-client-id", which the API ignores (feature/oauthkey/oauthkey.go).
            client_id = secret[len("tskey-client-") :].partition("-")[0]
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret, secret):
            return 401, {"error": "invalid_client", "error_description": "invalid client id or secret"}
        token = self.issue_token(client_id)
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "scope": " ".join(client.scopes),
        }

    def _client_of(self, headers: dict[str, str]) -> OAuthClientRecord | None:
        bearer = headers.get("Authorization", "")
        entry = self.tokens.get(bearer[7:]) if bearer.startswith("Bearer ") else None
        if entry is None or entry[1] < time.time():
            return None
        return self.clients[entry[0]]

    def _device(
        self, headers: dict[str, str], device_id: str, action: str, request: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        client = self._client_of(headers)
        if client is None:
            return 401, {"message": "API token invalid"}
        if not has_scope(client.scopes, "devices:core"):
            return 403, {"message": NOT_PERMITTED}
        node = self._node(device_id)
        if node is None:
            return 404, {"message": "not found"}
        device_id = node["ID"]
        if action == "tags":
            return self._set_tags(client, device_id, request)
        if action == "authorized" and isinstance(request.get("authorized"), bool):
            if request["authorized"]:
                self.control.authorize(device_id)
            return 200, {}
        if action == "routes":
            return self._set_routes(device_id, request)
        if action == "key" and isinstance(request.get("keyExpiryDisabled"), bool):
            self.control.set_key_expiry_disabled(device_id, request["keyExpiryDisabled"])
            return 200, {}
        return 400, {
            "message": f"the lab's API does not emulate POST /api/v2/device/{{id}}/{action} {sorted(request)}"
        }

    def _set_routes(self, device_id: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import ipaddress

        routes = request.get("routes")
        if not isinstance(routes, list) or not all(isinstance(route, str) for route in routes):
            return 400, {"message": "routes must be a list of strings"}
        for route in routes:
            try:
                ipaddress.ip_network(route)
            except ValueError:
                return 400, {"message": f"invalid route {route!r}"}
        self.control.approve_routes(device_id, routes)
        return 200, routes_json(self.control.node(device_id) or {})

    def _create_key(self, headers: dict[str, str], request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        client = self._client_of(headers)
        if client is None:
            return 401, {"message": "API token invalid"}
        if not has_scope(client.scopes, "auth_keys"):
            return 403, {"message": NOT_PERMITTED}
        create = ((request.get("capabilities") or {}).get("devices") or {}).get("create") or {}
        tags = tuple(create.get("tags") or ())
        if not tags:
            return 400, {"message": "tags are required for auth keys created by an OAuth client"}
        refused = [tag for tag in tags if tag not in client.tags]
        if refused:
            return 400, {"message": tags_refusal(refused)}
        expiry = int(request.get("expirySeconds") or MAX_EXPIRY_SECONDS)
        if not 0 < expiry <= MAX_EXPIRY_SECONDS:
            return 400, {"message": f"expirySeconds must be between 1 and {MAX_EXPIRY_SECONDS}"}
        try:
            key = self.control.mint_key(
                reusable=bool(create.get("reusable")),
                ephemeral=bool(create.get("ephemeral")),
                preauthorized=bool(create.get("preauthorized")),
                tags=tags,
                expiry_days=expiry / 86400,
            )
        except ValueError as refused_by_policy:
            # A tag the tailnet policy's tagOwners does not give the key's owner.
            return 400, {"message": str(refused_by_policy)}
        parsed = parse_auth_key(key)
        key_id = parsed.key_id if parsed else ""
        now = time.time()
        return 200, {
            "id": key_id,
            "key": key,
            "created": _timestamp(now),
            "expires": _timestamp(now + expiry),
            "capabilities": {"devices": {"create": create}},
            "description": str(request.get("description") or ""),
        }

    # -- devices: reading them, and their tags ------------------------------------------------------

    def answer_get(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        """The GET calls: list the tailnet's devices, or read one."""
        url = urllib.parse.urlsplit(path)
        self._seen("GET", url.path, headers, [])
        with_routes = urllib.parse.parse_qs(url.query).get("fields") == ["all"]
        parts = url.path.split("/")
        is_list = (
            url.path.startswith("/api/v2/tailnet/") and url.path.endswith("/devices") and len(parts) == 6
        )
        is_one = url.path.startswith("/api/v2/device/") and len(parts) == 5
        is_routes = url.path.startswith("/api/v2/device/") and len(parts) == 6 and parts[5] == "routes"
        if not (is_list or is_one or is_routes):
            return 404, {"message": "not found"}
        client = self._client_of(headers)
        if client is None:
            return 401, {"message": "API token invalid"}
        if not has_scope(client.scopes, "devices:core:read"):
            return 403, {"message": NOT_PERMITTED}
        if is_list:
            return 200, {"devices": [device_json(n, with_routes=with_routes) for n in self.control.nodes()]}
        node = self._node(parts[4])
        if node is None:
            return 404, {"message": "not found"}
        if is_routes:
            return 200, routes_json(node)
        return 200, device_json(node, with_routes=with_routes)

    def _node(self, device_id: str) -> dict[str, Any] | None:
        """A node by its `nodeId` or by its legacy numeric `id`, both of which the API takes."""
        for node in self.control.nodes():
            if device_id in (node["ID"], str(node["Number"])):
                return node
        return None

    def _set_tags(
        self, client: OAuthClientRecord, device_id: str, request: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        tags = request.get("tags")
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            return 400, {"message": "tags must be a list of strings"}
        # The client applies tags as their owner: the tags it was given, and only those the policy knows.
        refused = [t for t in tags if t not in client.tags or t in tags_not_permitted([t])]
        if refused:
            return 400, {"message": tags_refusal(refused)}
        self.control.set_tags(device_id, tuple(tags))
        return 200, {}

    def delete_device(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        """`DELETE /api/v2/device/{id}`: 200 and no body, or 404 for a device the tailnet does not have."""
        self._seen("DELETE", path, headers, [])
        device_id = path[len(DEVICE_PREFIX) :] if path.startswith(DEVICE_PREFIX) else ""
        if not device_id or "/" in device_id:
            return 404, {"message": "not found"}
        client = self._client_of(headers)
        if client is None:
            return 401, {"message": "API token invalid"}
        if not has_scope(client.scopes, "devices:core"):
            return 403, {"message": NOT_PERMITTED}
        for node in self.control.nodes():
            if device_id in (node["ID"], str(node["Number"])) and self.control.delete_node(node["ID"]):
                return 200, None
        return 404, {"message": "not found"}


# The legacy `devices` scope covers what the granular ones split (tailscale.com/kb/1215, legacy scopes).
LEGACY_SCOPES = {"devices:core": "devices", "auth_keys": "devices"}


def has_scope(granted: tuple[str, ...], needed: str) -> bool:
    """Whether OAuth scopes cover `needed`: a write scope covers its read, `all` covers everything."""
    base = needed.removesuffix(":read")
    legacy = LEGACY_SCOPES.get(base)
    covering = {base, "all", legacy}
    if needed.endswith(":read"):
        covering |= {needed, "all:read", f"{legacy}:read"}
    return any(scope in covering for scope in granted)


def device_json(node: dict[str, Any], *, with_routes: bool = False) -> dict[str, Any]:
    """A control plane node as the API's device object (`publicapi/device.md`)."""
    device: dict[str, Any] = {
        "addresses": list(node["TailscaleIPs"]),
        "id": str(node["Number"]),
        "nodeId": node["ID"],
        "user": TAGGED_LOGIN if node.get("Tags") else LAB_LOGIN,  # a tagged device is owned by its tags
        "name": str(node["DNSName"]).rstrip("."),
        "hostname": node["HostName"],
        "clientVersion": LONG_VERSION,
        "updateAvailable": False,
        "os": "linux",
        "created": node["Created"],
        "lastSeen": node.get("LastSeen") or _timestamp(time.time()),
        "connectedToControl": bool(node.get("Online")) and not node.get("LoggedOut"),
        "keyExpiryDisabled": bool(node.get("KeyExpiryDisabled")),
        "expires": node.get("KeyExpiry", "0001-01-01T00:00:00Z"),
        "authorized": bool(node.get("Authorized")),
        "isExternal": False,
        "machineKey": "",
        "nodeKey": node["NodeKey"],
        "blocksIncomingConnections": False,
        "tags": list(node.get("Tags") or []),
        "tailnetLockError": "",
        "tailnetLockKey": "",
    }
    if with_routes:
        device.update(routes_json(node))
    return device


def routes_json(node: dict[str, Any]) -> dict[str, list[str]]:
    """A device's routes as the API answers them: those it advertises, and those approved for it, advertised
    or not (`publicapi/device.md`, "Subnet routes": the two steps are independent)."""
    return {
        "advertisedRoutes": list(node.get("AdvertisedRoutes") or []),
        "enabledRoutes": list(node.get("ApprovedRoutes") or []),
    }
