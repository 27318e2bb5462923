"""pyinfra facts about a NixOS host and its Tailscale node.

Try them on a fleet: `pyinfra inventory.py fact tailnix.facts.TailscaleStatus --json`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from pyinfra.api.facts import FactBase

from tailnix import host_scripts, paths
from tailnix.switch import JOB_UNIT, RESULT_FILE

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
    switch_waited: int | None = None
    """Seconds the read waited for an earlier deploy's switch job to end; None when none was running."""
    switch_running: bool = False
    """That job was still running when the wait ran out: the rest of this state may change under it."""
    switch_result: str | None = None
    """The job's last word (`confirmed ...`, `rolled-back ... REASON`, ...) when the read waited for it."""

    def to_json(self) -> dict[str, object]:
        """The fields as JSON values, for `pyinfra ... fact tailnix.facts.TailnixHostState --json`."""
        return asdict(self)

    @property
    def is_nixos(self) -> bool:
        """Whether /etc/os-release says NixOS."""
        return self.os_id == "nixos"


_SECTION = "--- "
"""A line that starts the raw output of a command (JSON, so no line of it can start this way); host-state.sh
and verify-poll.sh print it."""


def _state_command(switch_wait: int) -> str:
    # One shell command for everything (host_scripts/host-state.sh): a deploy to a fleet where nothing
    # changed costs one round trip for facts.
    return host_scripts.command(
        "host-state.sh",
        switch_wait,
        RESULT_FILE,
        JOB_UNIT,
        paths.HOST_KEY_PUBLIC,
        paths.APPLIED_FILE,
        paths.PENDING_DIR,
        paths.NIXOS_DIR,
        *_FILES.values(),
        paths.MODULE_NAME,
        paths.SECRETS_IMPORT[2:],
    )


def _optional(value: str) -> str | None:
    return value or None


def _text(encoded: str) -> str | None:
    try:
        return base64.b64decode(encoded, validate=True).decode() if encoded else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text.strip() else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _configuration_text(sha256: str | None, encoded: str) -> str | None:
    if sha256 is None:
        return None  # no configuration.nix
    return _text(encoded) if encoded else ""


def _parse_state_output(output: list[str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Split the state command's output into its values, file hashes (by path) and raw sections."""
    values: dict[str, str] = {}
    hashes: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output:
        if line.startswith(_SECTION):
            current = sections.setdefault(line[len(_SECTION) :].strip(), [])
        elif current is not None:
            current.append(line)
        elif _SHA256_LINE.match(line):
            digest, _, path = line.partition("  ")
            hashes[path.strip()] = digest
        else:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values, hashes, {name: "\n".join(body) for name, body in sections.items()}


_SHA256_LINE = re.compile(r"^[0-9a-f]{64}  /")


class TailnixHostState(FactBase[HostState]):
    """The host's OS, SSH host key, and the state of the files tailnix manages.

    + switch_wait: how long to wait for an earlier deploy's switch job that is still running
    """

    def command(self, switch_wait: int = 0) -> str:
        return _state_command(switch_wait)

    def process(self, output: list[str]) -> HostState:
        values, hashes, sections = _parse_state_output(output)
        configuration_sha256 = hashes.get(paths.CONFIGURATION_FILE)
        return HostState(
            os_id=values.get("os_id", ""),
            os_version=values.get("os_version", ""),
            os_name=values.get("os_name", "").strip('"'),
            host_key=_optional(values.get("host_key", "")),
            secret_sha256=hashes.get(paths.SECRETS_FILE),
            module_sha256=hashes.get(paths.MODULE_FILE),
            configuration_sha256=configuration_sha256,
            configuration=_configuration_text(configuration_sha256, values.get("configuration_b64", "")),
            applied=_optional(values.get("applied", "")),
            pending=values.get("pending") == "yes",
            flake=values.get("flake") == "yes",
            has_nix_instantiate=values.get("nix_instantiate") == "yes",
            flake_nix=_text(values.get("flake_b64", "")),
            git_repository=values.get("git") == "yes",
            git_tracked=tuple(values.get("git_tracked", "").split()),
            tailscale_status=_json_object(sections.get("tailscale_status", "")),
            tailscale_prefs=_json_object(sections.get("tailscale_prefs", "")),
            switch_waited=int(values["switch_waited"]) if values.get("switch_waited", "").isdigit() else None,
            switch_running=values.get("switch_running") == "yes",
            switch_result=_optional(values.get("switch_result", "")),
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
