"""Mint a Tailscale auth key from the Tailscale API with an OAuth client.

The client credentials flow (`POST /api/v2/oauth/token`), then `POST /api/v2/tailnet/-/keys`: the same
two calls as Tailscale's own `get-authkey` command, with the same environment variables
(`TS_API_CLIENT_ID`, `TS_API_CLIENT_SECRET`, `TS_BASE_URL`). The client secret, the access token and
the new key live in this process's memory only: never in an argument, a file or the output.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from tailnix.authkey import AuthKeyError
from tailnix.sops import NotEncryptedError, SopsError, decrypt_value, read_metadata
from tailnix.tailnet_names import check_tag

DEFAULT_BASE_URL = "https://api.tailscale.com"
CLIENT_ID_ENV = "TS_API_CLIENT_ID"
CLIENT_SECRET_ENV = "TS_API_CLIENT_SECRET"
BASE_URL_ENV = "TS_BASE_URL"
CLIENT_ID_SECRET = "tailscale_oauth_client_id"
CLIENT_SECRET_SECRET = "tailscale_oauth_client_secret"
"""The names of the OAuth client's values in a sops file of its own (`--oauth-file`)."""
MAX_EXPIRY_DAYS = 90
"""Tailscale's limit for an auth key's expiry."""
TIMEOUT_SECONDS = 30
KEY_DESCRIPTION = "tailnix rotate-key"


class MintError(AuthKeyError):
    """No key could be minted; the message says which call failed and what the API answered."""


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth client's credentials, and where they were found (for messages)."""

    client_id: str
    client_secret: str = field(repr=False)
    source: str


@dataclass(frozen=True)
class MintedKey:
    """A new auth key as the API returned it."""

    key: str = field(repr=False)
    key_id: str
    expires: date
    reusable: bool
    tags: tuple[str, ...]


def client_from_environment(env: Mapping[str, str] | None = None) -> OAuthClient | None:
    """The OAuth client in `TS_API_CLIENT_ID` and `TS_API_CLIENT_SECRET`, if both are set."""
    env = os.environ if env is None else env
    client_id, secret = env.get(CLIENT_ID_ENV, "").strip(), env.get(CLIENT_SECRET_ENV, "").strip()
    if client_id and secret:
        return OAuthClient(client_id, secret, f"${CLIENT_ID_ENV} and ${CLIENT_SECRET_ENV}")
    if client_id or secret:
        missing = CLIENT_SECRET_ENV if client_id else CLIENT_ID_ENV
        raise MintError(
            f"${missing} is not set; an OAuth client needs both {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV}"
        )
    return None


def client_from_sops_file(path: Path, *, age_key_file: Path | None = None) -> OAuthClient:
    """The OAuth client kept in a sops file of its own, encrypted for the admins only.

    Not in the hosts' secrets file: every host can decrypt that one with its host key, and a host must
    not be able to mint keys.
    """
    try:
        keys = read_metadata(path).keys
    except (NotEncryptedError, OSError) as error:
        raise MintError(f"--oauth-file = {str(path)!r}: {error}") from None
    missing = [name for name in (CLIENT_ID_SECRET, CLIENT_SECRET_SECRET) if name not in keys]
    if missing:
        raise MintError(f"--oauth-file = {str(path)!r}: no {' and no '.join(missing)} in it")
    try:
        client_id = decrypt_value(path, CLIENT_ID_SECRET, age_key_file=age_key_file).strip()
        secret = decrypt_value(path, CLIENT_SECRET_SECRET, age_key_file=age_key_file).strip()
    except SopsError as error:
        raise MintError(f"--oauth-file = {str(path)!r}: cannot decrypt it: {error}") from None
    return OAuthClient(client_id, secret, f"{CLIENT_ID_SECRET} and {CLIENT_SECRET_SECRET} in {path}")


def check_base_url(url: str) -> str:
    """The API's base URL without a trailing slash; https, or http to this machine only (a test API)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise MintError(f"--api-url = {url!r}: not an http(s) URL")
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise MintError(
            f"--api-url = {url!r}: the client secret would cross the network in clear; use https "
            "(http is accepted for this machine only, as for a test API)"
        )
    return url.rstrip("/")


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def check_request(tags: tuple[str, ...], expiry_days: int) -> None:
    """Refuse what the API would refuse, before any call: an OAuth client mints tagged keys only."""
    if not tags:
        raise MintError(
            "an OAuth client can mint tagged keys only: give --tag tag:NAME (a tag the client may apply, "
            "as tagOwners in the tailnet policy allow)"
        )
    for tag in tags:
        reason = check_tag(tag)
        if reason:
            raise MintError(f"--tag = {tag!r}: {reason}")
    if not 1 <= expiry_days <= MAX_EXPIRY_DAYS:
        raise MintError(f"--days = {expiry_days}: a minted key expires after 1 to {MAX_EXPIRY_DAYS} days")


def _call(request: urllib.request.Request, what: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raise MintError(f"{what}: {request.full_url} answered {error.code}: {_api_message(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise MintError(f"{what}: cannot reach {request.full_url}: {reason}") from None
    try:
        value = json.loads(body)
    except ValueError:
        raise MintError(f"{what}: {request.full_url} answered something that is not JSON") from None
    if not isinstance(value, dict):
        raise MintError(f"{what}: {request.full_url} answered JSON that is not an object")
    return value


def _api_message(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    if isinstance(body, dict):
        for name in ("message", "error_description", "error"):
            if isinstance(body.get(name), str) and body[name]:
                return str(body[name])
    return str(error.reason)


def access_token(base_url: str, client: OAuthClient) -> str:
    """An API access token for the client (the client credentials flow)."""
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client.client_id,
            "client_secret": client.client_secret,
        }
    ).encode()
    request = urllib.request.Request(
        f"{base_url}/api/v2/oauth/token",
        data=form,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    answer = _call(request, f"getting an access token for the OAuth client from {client.source}")
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise MintError(f"{base_url}/api/v2/oauth/token answered without an access_token")
    return token


def mint_auth_key(
    base_url: str,
    client: OAuthClient,
    *,
    tags: tuple[str, ...],
    expiry_days: int,
    reusable: bool = True,
    ephemeral: bool = False,
    preauthorized: bool = True,
) -> MintedKey:
    """Mint an auth key for the client's tailnet; raise MintError with the API's words when it refuses."""
    check_request(tags, expiry_days)
    base_url = check_base_url(base_url)
    token = access_token(base_url, client)
    body = {
        "capabilities": {
            "devices": {
                "create": {
                    "reusable": reusable,
                    "ephemeral": ephemeral,
                    "preauthorized": preauthorized,
                    "tags": list(tags),
                }
            }
        },
        "expirySeconds": expiry_days * 86400,
        "description": KEY_DESCRIPTION,
    }
    request = _api_post(base_url, token, "/api/v2/tailnet/-/keys", body)
    answer = _call(request, "minting an auth key")
    key, key_id, expires = answer.get("key"), answer.get("id"), answer.get("expires")
    if not isinstance(key, str) or not key.startswith("tskey-auth-"):
        raise MintError(f"{request.full_url} answered without an auth key (tskey-auth-...)")
    try:
        expiry = datetime.fromisoformat(str(expires).replace("Z", "+00:00")).date()
    except ValueError:
        raise MintError(f"{request.full_url} answered an expiry that is not a date: {expires!r}") from None
    return MintedKey(key, str(key_id or "?"), expiry, reusable, tags)


def _api_post(base_url: str, token: str, path: str, body: dict[str, Any]) -> urllib.request.Request:
    return urllib.request.Request(
        f"{base_url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )


def disable_key_expiry(base_url: str, token: str, device_id: str) -> None:
    """Disable the expiry of a device's node key (`POST /api/v2/device/{id}/key`, scope devices:core).

    + device_id: the device's `nodeId`, which its host reports as `Self.ID` in `tailscale status --json`
    """
    path = f"/api/v2/device/{urllib.parse.quote(device_id, safe='')}/key"
    _call(
        _api_post(base_url, token, path, {"keyExpiryDisabled": True}),
        f"disabling the key expiry of {device_id}",
    )


def change_device_routes(
    base_url: str, token: str, device_id: str, *, approve: list[str], withdraw: list[str]
) -> list[str]:
    """Approve `approve` and withdraw `withdraw` for a device, keeping its other approvals; returns its
    `enabledRoutes`.

    `GET /api/v2/device/{id}/routes` answers `{"advertisedRoutes", "enabledRoutes"}`; a `POST` to the same
    path with `{"routes": [...]}` replaces the enabled (approved) routes and answers the same shape (scope
    devices:core). An approval outlives the route's advertisement (`publicapi/device.md`, "Subnet routes"):
    only this call withdraws it. Nothing is posted when the enabled routes are as wanted already.
    """
    path = f"/api/v2/device/{urllib.parse.quote(device_id, safe='')}/routes"
    reading = urllib.request.Request(
        f"{base_url}{path}", headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    before = _call(reading, f"reading the routes of {device_id}")
    enabled = [str(route) for route in before.get("enabledRoutes") or []]
    routes = list(dict.fromkeys([*(r for r in enabled if r not in withdraw), *approve]))
    if set(routes) == set(enabled):
        return enabled
    after = _call(_api_post(base_url, token, path, {"routes": routes}), f"setting the routes of {device_id}")
    return [str(route) for route in after.get("enabledRoutes") or []]
