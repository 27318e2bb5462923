"""Find and delete a host's devices through the Tailscale API, with the OAuth client `rotate-key --mint` uses.

Calls of the API v2 (tailscale.com/api, "Devices"): `GET /api/v2/tailnet/-/devices` lists the tailnet's
devices (`{"devices": [{"id", "nodeId", "hostname", "name", ...}]}`), `GET /api/v2/device/{deviceId}` reads
one (404 when there is none), and `DELETE /api/v2/device/{deviceId}`
removes one (200 with an empty body; 404 when there is no such device). The access token comes from the
client credentials flow (`mint.access_token`) and lives in this process's memory only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

from tailnix.mint import TIMEOUT_SECONDS, MintError, OAuthClient, access_token, check_base_url


class DeviceApiError(MintError):
    """A device call failed; the message says which call and what the API answered.

    + status: the HTTP status the API answered, 0 when it could not be reached
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Device:
    """A device of the tailnet, as the API lists it."""

    device_id: str
    """Its `nodeId` (the API's preferred id), or the legacy `id` when there is none."""
    hostname: str
    name: str
    """Its MagicDNS name."""
    online: bool = False
    """Connected to control now (`connectedToControl`)."""


def _request(base_url: str, token: str, method: str, path: str, what: str) -> Any:
    request = urllib.request.Request(
        f"{base_url}{path}",
        method=method,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        try:
            answer = json.loads(error.read() or b"{}")
        except ValueError:
            answer = {}
        message = answer.get("message") if isinstance(answer, dict) else None
        raise DeviceApiError(
            f"{what}: {request.full_url} answered {error.code}: {message or error.reason}", error.code
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise DeviceApiError(
            f"{what}: cannot reach {request.full_url}: {getattr(error, 'reason', error)}"
        ) from None
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise DeviceApiError(f"{what}: {request.full_url} answered something that is not JSON") from None


def _device(answer: dict[str, Any]) -> Device:
    return Device(
        str(answer.get("nodeId") or answer.get("id")),
        str(answer.get("hostname")),
        str(answer.get("name") or ""),
        online=bool(answer.get("connectedToControl")),
    )


class DeviceDirectory(Protocol):
    """Where a host's devices are found and deleted: the Tailscale API, or a headscale server's CLI."""

    via: str
    """How a deletion is made, as the output says it after the device (empty for the Tailscale API)."""
    how_to_remove: str
    """Where a person removes a device by hand, as a phrase: `in the admin console (...)`."""

    def named(self, hostname: str) -> list[Device]:
        """The devices whose host name is `hostname`."""
        ...

    def by_id(self, device_id: str) -> Device | None:
        """The device of that ID; None when there is none."""
        ...

    def delete(self, device: Device) -> bool:
        """Remove the device; False when it was gone already."""
        ...


class TailnetDevices:
    """The tailnet's devices through the API, with one access token for the calls of one command.

    + base_url: the API (https, or http to this machine only)
    + client: the OAuth client
    """

    via = ""
    how_to_remove = "in the admin console (Machines, Remove)"

    def __init__(self, base_url: str, client: OAuthClient) -> None:
        self.base_url = check_base_url(base_url)
        self.client = client
        self._token: str | None = None

    def _call(self, method: str, path: str, what: str) -> Any:
        if self._token is None:
            self._token = access_token(self.base_url, self.client)
        return _request(self.base_url, self._token, method, path, what)

    def by_id(self, device_id: str) -> Device | None:
        """The device of that ID (`nodeId`, or the legacy `id`); None when the tailnet has none (404)."""
        path = f"/api/v2/device/{urllib.parse.quote(device_id, safe='')}"
        try:
            answer = self._call("GET", path, f"reading the device {device_id}")
        except DeviceApiError as error:
            if error.status == 404:
                return None
            raise
        if not isinstance(answer, dict):
            raise DeviceApiError(f"{self.base_url}{path} answered without a device")
        return _device(answer)

    def named(self, hostname: str) -> list[Device]:
        """The devices whose host name is `hostname` (a reinstalled host can have left more than one)."""
        answer = self._call("GET", "/api/v2/tailnet/-/devices", "listing the tailnet's devices")
        listed = answer.get("devices") if isinstance(answer, dict) else None
        if not isinstance(listed, list):
            raise DeviceApiError(f"{self.base_url}/api/v2/tailnet/-/devices answered without a devices list")
        return [_device(d) for d in listed if isinstance(d, dict) and d.get("hostname") == hostname]

    def delete(self, device: Device) -> bool:
        """Remove the device from the tailnet; False when it was gone already (404)."""
        try:
            self._call("DELETE", f"/api/v2/device/{device.device_id}", f"deleting the device {device.name}")
        except DeviceApiError as error:
            if error.status == 404:
                return False
            raise
        return True
