"""What the tailnet called each host at its last good deploy, kept beside the inventory in `tailnix-nodes.json`.

A host that no longer answers cannot say which device is its own, and its device's host name need not
be its inventory name nor `tailscale_hostname` (the node takes the host's own hostname by default). So
every deploy that sees a host Running records the node it saw: its ID (`Self.ID` of `tailscale status
--json`, the device's `nodeId` in the API, which never changes while the device lives), its host name,
MagicDNS name and addresses. `tailnix retire` deletes exactly that device when the host does not answer.

`tailnix deploy` also records here the routes it approved through the API for a node (`approved_routes`),
so that a later deploy withdraws an approval whose route the host no longer advertises.

The file holds no secret (the same facts `tailnix status` prints); commit it with the inventory, so that
another workstation retires the right device too. It is JSON, one entry per inventory host, sorted, and
rewritten (atomically, with the directory locked) only when an entry changed:

    {"schema": 1, "hosts": {"desk": {"node_id": "nXXXXCNTRL", "hostname": "desk", "dns_name":
     "desk.example.ts.net.", "tailscale_ips": ["100.64.0.1", "fd7a:115c:a1e0::1"], "approved_routes": []}}}
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

RECORD_FILE = "tailnix-nodes.json"
SCHEMA = 1


class NodeRecordError(Exception):
    """The record file cannot be read; the message names it and what is wrong."""


@dataclass(frozen=True)
class NodeRecord:
    """The node a host had at its last good deploy."""

    node_id: str
    hostname: str
    dns_name: str
    tailscale_ips: tuple[str, ...] = ()
    approved_routes: tuple[str, ...] = ()
    """The routes `tailnix deploy` approved for this node through the API (not those of autoApprovers)."""

    @property
    def name(self) -> str:
        """The device's name as a person reads it: its MagicDNS name, else its host name."""
        return self.dns_name.rstrip(".") or self.hostname


def node_of(status: Mapping[str, Any]) -> NodeRecord | None:
    """The record of a node from its `tailscale status --json`; None when it has no node ID."""
    own = status.get("Self") or {}
    node_id = own.get("ID")
    if not isinstance(node_id, str) or not node_id:
        return None
    return NodeRecord(
        node_id=node_id,
        hostname=str(own.get("HostName") or ""),
        dns_name=str(own.get("DNSName") or ""),
        tailscale_ips=tuple(str(ip) for ip in own.get("TailscaleIPs") or ()),
    )


def read_records(directory: Path) -> dict[str, NodeRecord]:
    """The recorded nodes of the fleet in `directory`, by inventory host; empty when there is no file."""
    path = directory / RECORD_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise NodeRecordError(f"{path}: cannot be read as tailnix's record of nodes: {error}") from None
    hosts = document.get("hosts") if isinstance(document, dict) else None
    if not isinstance(hosts, dict):
        raise NodeRecordError(f"{path}: cannot be read as tailnix's record of nodes: no `hosts` map")
    records = {}
    for name, entry in hosts.items():
        try:
            records[str(name)] = NodeRecord(
                node_id=str(entry["node_id"]),
                hostname=str(entry.get("hostname") or ""),
                dns_name=str(entry.get("dns_name") or ""),
                tailscale_ips=tuple(str(ip) for ip in entry.get("tailscale_ips") or ()),
                approved_routes=tuple(str(route) for route in entry.get("approved_routes") or ()),
            )
        except (KeyError, TypeError, AttributeError):
            raise NodeRecordError(f"{path}: the entry of {name} has no node_id") from None
    return records


LOCK_WAIT_SECONDS = 10.0
"""How long a run waits for another one writing the record (a write takes milliseconds)."""


def _lock(descriptor: int, path: Path) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise NodeRecordError(
                    f"{path}: another tailnix run kept its directory locked for {LOCK_WAIT_SECONDS:g}s; "
                    "nothing was recorded"
                ) from None
            time.sleep(0.05)


def update_records(
    directory: Path, changes: Mapping[str, NodeRecord | None], *, keep_routes: bool = True
) -> None:
    """Record the nodes of `changes` (None: forget the host), keeping the others; nothing is written
    when nothing changed.

    + keep_routes: a node seen again keeps the routes recorded as approved for it (a deploy's record);
      False when `changes` say which routes are approved now
    """
    path = directory / RECORD_FILE
    # The directory itself is locked (two deploys from one fleet may end at once): no lock file to ignore.
    lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _lock(lock, path)
        before = read_records(directory)
        after = dict(before)
        for name, record in changes.items():
            if record is None:
                after.pop(name, None)
                continue
            known = before.get(name)
            if keep_routes and known is not None and known.node_id == record.node_id:
                record = replace(record, approved_routes=known.approved_routes)
            after[name] = record
        if after == before:
            return
        document = {"schema": SCHEMA, "hosts": {name: asdict(after[name]) for name in sorted(after)}}
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{RECORD_FILE}.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(document, indent=2) + "\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        os.close(lock)


_SEEN: dict[str, NodeRecord] = {}


def _write_seen(directory: Path) -> None:
    try:
        update_records(directory, _SEEN)
    except (OSError, NodeRecordError) as error:
        # stderr: `tailnix deploy` reads pyinfra's stdout as JSON.
        print(
            f"tailnix: the nodes seen were not recorded in {directory / RECORD_FILE}: {error}",
            file=sys.stderr,
        )


def saw(host: str, status: Mapping[str, Any]) -> None:
    """During a deploy: the host's node is Running as `status` says; recorded once, when the run ends.

    One write per run, not per host: a deploy to hundreds of hosts rewrites the file once.
    """
    record = node_of(status)
    if record is None:
        return
    if not _SEEN:
        atexit.register(_write_seen, Path.cwd())
    _SEEN[host] = record
