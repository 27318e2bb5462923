"""`tailnix status`: each host's node and the mesh between them, as a documented document."""

from __future__ import annotations

import base64
import binascii
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyinfra.api.facts import FactBase

from tailnix import paths
from tailnix.advertised_routes import UNAPPROVED, describe, unapproved_routes, wanted_routes
from tailnix.authkey import OK, WARNING, Finding
from tailnix.drift import prefs_drift
from tailnix.fleet import FleetHost, inventory_directory
from tailnix.plan import plan_host
from tailnix.runner import read_fact
from tailnix.secrets_file import KEY_EXPIRY_WARNING_DAYS
from tailnix.settings import SettingsError

FLEET_STATUS_FACT = "tailnix.status.FleetHostStatus"


class FleetHostStatus(FactBase[dict[str, Any]]):
    """What `tailnix status` reports of a host: its OS, the last switch, and `tailscale status --json`."""

    def command(self) -> str:
        applied = shlex.quote(paths.APPLIED_FILE)
        return "; ".join(
            [
                "ID= VERSION_ID=",
                ". /etc/os-release 2>/dev/null",
                'echo "os_id=$ID"',
                'echo "os_version=$VERSION_ID"',
                f'echo "applied=$(cat {applied} 2>/dev/null)"',
                f'echo "applied_mtime=$(stat -c %Y {applied} 2>/dev/null)"',
                'echo "tailscale_b64=$(tailscale status --json 2>/dev/null | base64 -w 0)"',
                'echo "prefs_b64=$(tailscale debug prefs 2>/dev/null | base64 -w 0)"',
                "true",
            ]
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.partition("=")[::2] for line in output)
        status = _json_b64(values.get("tailscale_b64", ""))
        prefs = _json_b64(values.get("prefs_b64", ""))
        mtime = values.get("applied_mtime", "")
        return {
            "os_id": values.get("os_id", ""),
            "os_version": values.get("os_version", ""),
            "applied": values.get("applied") or None,
            "applied_mtime": int(mtime) if mtime.isdigit() else None,
            "tailscale": status,
            "prefs": prefs,
        }


def _json_b64(encoded: str) -> dict[str, Any] | None:
    try:
        decoded = base64.b64decode(encoded).decode()
        value = json.loads(decoded) if decoded.strip() else None
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


STATUS_SCHEMA_VERSION = 1


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_key_warning(key_expiry: object, *, warn_days: int, now: datetime | None = None) -> str | None:
    """A sentence when the node key (`Self.KeyExpiry`) expires within `warn_days`; None otherwise.

    A passed expiry is no warning here: the node is then NeedsLogin, which status reports as a problem.
    """
    if not isinstance(key_expiry, str):
        return None  # not logged in, or the device's key expiry is disabled (KeyExpiry is omitted)
    try:
        expires = datetime.fromisoformat(key_expiry.replace("Z", "+00:00"))
    except ValueError:
        return None
    left = expires - (now or datetime.now(UTC))
    if not 0 < left.total_seconds() <= warn_days * 86400:
        return None
    return (
        f"its node key expires on {expires.date()}, in {left.days} days: the node will have to log in again "
        "(re-authenticate it, or disable key expiry for the device)"
    )


def fleet_status(
    inventory_file: Path, hosts: list[FleetHost], *, warn_days: int = KEY_EXPIRY_WARNING_DAYS
) -> dict[str, Any]:
    """The health of every host and of the mesh, as the documented `tailnix status --json` document."""
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, hosts)
    entries: list[dict[str, Any]] = []
    node_ids: dict[str, str] = {}
    peers_of: dict[str, dict[str, bool]] = {}
    for host in hosts:
        entry: dict[str, Any] = {
            "name": host.name,
            "reachable": host.name not in reading.errors,
            "nixos_version": None,
            "backend_state": None,
            "tailscale_ips": [],
            "dns_name": None,
            "node_key_expiry": None,
            "tags": [],
            "unapproved_routes": [],
            "warnings": [],
            "health": [],
            "module_current": None,
            "last_switch": None,
            "drift": [],
            "problems": [],
            "healthy": False,
        }
        entries.append(entry)
        problems: list[str] = entry["problems"]
        if host.name in reading.refused:
            problems.append(reading.refused[host.name])
            continue
        if host.name in reading.errors:
            problems.append(f"unreachable: {reading.errors[host.name]}")
            continue
        value = reading.values[host.name]
        if value["os_id"] != "nixos":
            problems.append(f"not NixOS (os-release ID={value['os_id'] or 'none'})")
        else:
            entry["nixos_version"] = value["os_version"] or None
        entry["last_switch"] = _iso(value["applied_mtime"])
        plan = None
        try:
            plan = plan_host(host.name, host.data, base_dir=inventory_directory(inventory_file))
            # A flake host that brings its own sops-nix gets the module without the fetched copy.
            current = {plan.fingerprint, plan.fingerprint_for(plan.module_for_sops_nix_flake)}
            entry["module_current"] = value["applied"] in current
            if not entry["module_current"]:
                problems.append(
                    "never switched by tailnix"
                    if value["applied"] is None
                    else "its secrets file or module is not the current one; run `tailnix deploy`"
                )
        except SettingsError as error:
            problems.append(str(error))
        status = value["tailscale"]
        if status is None:
            problems.append("tailscaled does not answer")
            continue
        entry["backend_state"] = status.get("BackendState")
        own = status.get("Self") or {}
        entry["tailscale_ips"] = list(own.get("TailscaleIPs") or [])
        entry["dns_name"] = own.get("DNSName") or None
        entry["node_key_expiry"] = own.get("KeyExpiry")
        entry["tags"] = list(own.get("Tags") or [])
        warning = node_key_warning(entry["node_key_expiry"], warn_days=warn_days)
        if warning is not None:
            entry["warnings"].append(warning)
        # What tailscaled itself warns about: a Running node that lost its relay stays Running.
        entry["health"] = [str(warning) for warning in status.get("Health") or []]
        problems.extend(f"tailscale health: {warning}" for warning in entry["health"])
        if entry["backend_state"] != "Running":
            problems.append(f"BackendState is {entry['backend_state']}")
            continue
        entry["unapproved_routes"] = unapproved_routes(wanted_routes(host), own)
        if entry["unapproved_routes"]:
            problems.append(UNAPPROVED.format(routes=describe(entry["unapproved_routes"])))
        if plan is not None and value["prefs"] is not None:
            # Not a problem: told so that a deploy's `tailscale up --reset` clears nothing unseen.
            entry["drift"] = [d.to_json() for d in prefs_drift(plan.settings, value["prefs"])]
        if own.get("ID"):
            node_ids[host.name] = str(own["ID"])
        peers_of[host.name] = {
            str(peer.get("ID")): bool(peer.get("Online")) for peer in (status.get("Peer") or {}).values()
        }
    mesh: list[str] = []
    by_name = {entry["name"]: entry for entry in entries}
    for name, peers in peers_of.items():
        for other, node_id in node_ids.items():
            if other == name:
                continue
            if node_id not in peers:
                problem = f"{name} does not see {other} as a peer"
            elif not peers[node_id]:
                problem = f"{name} sees {other} offline"
            else:
                continue
            mesh.append(problem)
            by_name[name]["problems"].append(problem)
    for entry in entries:
        entry["healthy"] = not entry["problems"]
    return {
        "schema": STATUS_SCHEMA_VERSION,
        "healthy": all(entry["healthy"] for entry in entries),
        "hosts": entries,
        # Complete only when every host is on the tailnet and sees every other one online.
        "mesh": {
            "ok": not mesh and len(node_ids) == len(entries),
            "members": sorted(node_ids),
            "problems": mesh,
        },
    }


def node_key_findings(document: dict[str, Any], warn_days: int) -> list[Finding]:
    """`tailnix check --hosts`: a warning per node key that expires within `warn_days`, from a status."""
    findings = []
    for host in document["hosts"]:
        if not host["reachable"]:
            findings.append(
                Finding(WARNING, f"{host['name']}: its node key could not be read: {host['problems'][0]}")
            )
        findings += [Finding(WARNING, f"{host['name']}: {warning}") for warning in host["warnings"]]
    if not findings:
        findings.append(
            Finding(
                OK, f"no node key expires within {warn_days} days on the {len(document['hosts'])} hosts read"
            )
        )
    return findings
