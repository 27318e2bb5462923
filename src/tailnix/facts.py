"""pyinfra facts about a NixOS host and its Tailscale node.

Try them on a fleet: `pyinfra inventory.py fact tailnix.facts.TailscaleStatus --json`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass
from typing import Any

from pyinfra.api.facts import FactBase

from tailnix import paths

_FILES = {
    "secret": paths.SECRETS_FILE,
    "module": paths.MODULE_FILE,
    "configuration": paths.CONFIGURATION_FILE,
}


@dataclass(frozen=True)
class HostState:
    """What the deploy needs to know about a host, read in one round trip."""

    os_id: str
    os_version: str
    os_name: str
    host_key: str | None
    """The `ssh-ed25519 AAAA...` line of the host's SSH key, None when there is none."""
    secret_sha256: str | None
    module_sha256: str | None
    configuration_sha256: str | None
    configuration: str | None
    """The text of configuration.nix, None when the file does not exist."""
    applied: str | None
    """The fingerprint of what the last successful switch applied."""
    pending: bool
    """Files changed by a deploy that did not switch successfully are waiting to be switched or restored."""
    flake: bool
    has_nix_instantiate: bool
    flake_nix: str | None = None
    """The text of /etc/nixos/flake.nix, None when the host is not configured by a flake."""
    git_repository: bool = False
    """/etc/nixos is a git repository (a flake there sees only the files git tracks)."""
    git_tracked: tuple[str, ...] = ()
    """Which of the files tailnix places git already tracks, relative to /etc/nixos."""
    tailscale_status: dict[str, Any] | None = None
    """`tailscale status --json --peers=false`, None when tailscaled does not answer."""
    tailscale_prefs: dict[str, Any] | None = None
    """`tailscale debug prefs`, None when tailscaled does not answer."""

    def to_json(self) -> dict[str, object]:
        """The fields as JSON values, for `pyinfra ... fact tailnix.facts.TailnixHostState --json`."""
        return asdict(self)

    @property
    def is_nixos(self) -> bool:
        """Whether /etc/os-release says NixOS."""
        return self.os_id == "nixos"


def _state_command() -> str:
    # One shell command for everything: a deploy to a fleet where nothing changed costs one round trip
    # for facts. Every line is `key=value`; missing things give empty values, never a failed command.
    lines = [
        "ID= VERSION_ID= PRETTY_NAME=",
        ". /etc/os-release 2>/dev/null",
        'echo "os_id=$ID"',
        'echo "os_version=$VERSION_ID"',
        'echo "os_name=$PRETTY_NAME"',
        f'echo "host_key=$(head -n 1 {paths.HOST_KEY_PUBLIC} 2>/dev/null)"',
    ]
    for name, path in _FILES.items():
        lines.append(f'echo "{name}_sha256=$(sha256sum {path} 2>/dev/null | cut -d " " -f 1)"')
    lines += [
        f'echo "applied=$(cat {paths.APPLIED_FILE} 2>/dev/null)"',
        f'echo "pending=$(test -d {paths.PENDING_DIR} && echo yes)"',
        f'echo "flake=$(test -e {paths.NIXOS_DIR}/flake.nix && echo yes)"',
        'echo "nix_instantiate=$(command -v nix-instantiate)"',
        f'echo "configuration_b64=$(base64 -w 0 {paths.CONFIGURATION_FILE} 2>/dev/null)"',
        f'echo "flake_b64=$(base64 -w 0 {paths.NIXOS_DIR}/flake.nix 2>/dev/null)"',
        f'echo "git=$(test -d {paths.NIXOS_DIR}/.git && echo yes)"',
        f'echo "git_tracked=$(test -d {paths.NIXOS_DIR}/.git && git -C {paths.NIXOS_DIR} ls-files -- '
        f'{paths.MODULE_NAME} {paths.SECRETS_IMPORT[2:]} 2>/dev/null | tr "\\n" " ")"',
        # The node's state rides along, so that verifying a fleet where nothing changed costs nothing more.
        'echo "tailscale_status_b64=$(tailscale status --json --peers=false 2>/dev/null | base64 -w 0)"',
        'echo "tailscale_prefs_b64=$(tailscale debug prefs 2>/dev/null | base64 -w 0)"',
        "true",
    ]
    return "; ".join(lines)


def _optional(value: str) -> str | None:
    return value or None


def _text(encoded: str) -> str | None:
    try:
        return base64.b64decode(encoded).decode() if encoded else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _json_object(encoded: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.b64decode(encoded)) if encoded else None
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


class TailnixHostState(FactBase[HostState]):
    """The host's OS, SSH host key, and the state of the files tailnix manages."""

    def command(self) -> str:
        return _state_command()

    def process(self, output: list[str]) -> HostState:
        values: dict[str, str] = {}
        for line in output:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
        configuration: str | None = None
        if values.get("configuration_sha256"):
            try:
                configuration = base64.b64decode(values.get("configuration_b64", "")).decode()
            except (binascii.Error, UnicodeDecodeError):
                configuration = None
        return HostState(
            os_id=values.get("os_id", ""),
            os_version=values.get("os_version", ""),
            os_name=values.get("os_name", "").strip('"'),
            host_key=_optional(values.get("host_key", "")),
            secret_sha256=_optional(values.get("secret_sha256", "")),
            module_sha256=_optional(values.get("module_sha256", "")),
            configuration_sha256=_optional(values.get("configuration_sha256", "")),
            configuration=configuration,
            applied=_optional(values.get("applied", "")),
            pending=values.get("pending") == "yes",
            flake=values.get("flake") == "yes",
            has_nix_instantiate=bool(values.get("nix_instantiate")),
            flake_nix=_text(values.get("flake_b64", "")),
            git_repository=values.get("git") == "yes",
            git_tracked=tuple(values.get("git_tracked", "").split()),
            tailscale_status=_json_object(values.get("tailscale_status_b64", "")),
            tailscale_prefs=_json_object(values.get("tailscale_prefs_b64", "")),
        )


class NixosRelease(FactBase[dict[str, str]]):
    """The fields of /etc/os-release (`ID`, `VERSION_ID`, `PRETTY_NAME`, ...)."""

    def command(self) -> str:
        return "cat /etc/os-release 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, str]:
        release: dict[str, str] = {}
        for line in output:
            key, sep, value = line.partition("=")
            if sep:
                release[key.strip()] = value.strip().strip('"')
        return release


class TailscaleStatus(FactBase[dict[str, Any] | None]):
    """`tailscale status --json` of the host (without peers); None when tailscaled does not answer."""

    def requires_command(self) -> str:
        return "tailscale"

    def command(self) -> str:
        return "tailscale status --json --peers=false 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, Any] | None:
        text = "\n".join(output).strip()
        if not text:
            return None
        try:
            status = json.loads(text)
        except json.JSONDecodeError:
            return None
        return status if isinstance(status, dict) else None
