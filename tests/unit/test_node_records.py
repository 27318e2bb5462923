"""The record of the nodes the deploys saw (`tailnix-nodes.json`) and the peers' view of a node's routes."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tailnix import node_records
from tailnix.fleet import FleetHost
from tailnix.node_records import (
    RECORD_FILE,
    NodeRecord,
    NodeRecordError,
    node_of,
    read_records,
    update_records,
)
from tailnix.routes import _seen_from_peers, read_withdrawals, withdrawal_change

STATUS = {
    "Self": {
        "ID": "nAbc1CNTRL",
        "HostName": "box",
        "DNSName": "box.example.ts.net.",
        "TailscaleIPs": ["100.64.0.7", "fd7a:115c:a1e0::7"],
    }
}


def test_a_node_is_recorded_by_its_id_and_names_and_kept_in_inventory_order(tmp_path: Path) -> None:
    record = node_of(STATUS)
    assert record == NodeRecord(
        "nAbc1CNTRL", "box", "box.example.ts.net.", ("100.64.0.7", "fd7a:115c:a1e0::7")
    )
    update_records(tmp_path, {"zeta": record, "alpha": record})
    assert list(json.loads((tmp_path / RECORD_FILE).read_text())["hosts"]) == ["alpha", "zeta"]
    assert read_records(tmp_path) == {"alpha": record, "zeta": record}
    assert (tmp_path / RECORD_FILE).stat().st_mode & 0o777 == 0o644
    assert node_of({"Self": {}}) is None and node_of({}) is None


def test_nothing_is_written_when_nothing_changed(tmp_path: Path) -> None:
    record = node_of(STATUS)
    update_records(tmp_path, {"box": record})
    before = (tmp_path / RECORD_FILE).stat().st_mtime_ns
    (tmp_path / RECORD_FILE).touch()
    touched = (tmp_path / RECORD_FILE).stat().st_mtime_ns
    update_records(tmp_path, {"box": record})
    assert (tmp_path / RECORD_FILE).stat().st_mtime_ns == touched >= before


def test_a_node_seen_again_keeps_its_approved_routes_and_a_new_node_drops_them(tmp_path: Path) -> None:
    record = node_of(STATUS)
    assert record is not None
    update_records(tmp_path, {"box": NodeRecord(**{**record.__dict__, "approved_routes": ("10.1.0.0/24",)})})
    update_records(tmp_path, {"box": record})
    assert read_records(tmp_path)["box"].approved_routes == ("10.1.0.0/24",)
    update_records(tmp_path, {"box": record}, keep_routes=False)
    assert read_records(tmp_path)["box"].approved_routes == ()
    update_records(tmp_path, {"box": None})
    assert read_records(tmp_path) == {}


def test_a_record_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    (tmp_path / RECORD_FILE).write_text("[1, 2]")
    with pytest.raises(NodeRecordError, match=f"{tmp_path / RECORD_FILE}: cannot be read .*no `hosts` map"):
        read_records(tmp_path)


def _peer(viewer_sees: dict[str, object]) -> dict[str, object]:
    return {"Peer": {"key": {"ID": "nRouter", **viewer_sees}}}


def test_routes_are_checked_from_two_peers_and_the_one_that_does_not_see_them_is_named() -> None:
    statuses = {
        "router": {},
        "a": _peer({"PrimaryRoutes": ["192.168.5.0/24"]}),
        "b": _peer({"PrimaryRoutes": []}),
        "c": _peer({"PrimaryRoutes": []}),  # a third peer is not asked
    }
    assert _seen_from_peers("router", "nRouter", ["192.168.5.0/24"], statuses) == (
        False,
        "b does not see 192.168.5.0/24 among its PrimaryRoutes",
    )
    statuses["b"] = _peer({"PrimaryRoutes": ["192.168.5.0/24"]})
    assert _seen_from_peers("router", "nRouter", ["192.168.5.0/24"], statuses) == (
        True,
        "a and b see 192.168.5.0/24 as its primary routes",
    )
    assert _seen_from_peers("router", "nRouter", ["192.168.5.0/24"], {"router": {}, "a": {"Peer": {}}}) == (
        False,
        "a does not see this node as a peer",
    )


def test_a_withdrawn_route_or_exit_node_still_seen_by_a_peer_is_named() -> None:
    statuses = {"router": {}, "a": _peer({"PrimaryRoutes": ["192.168.5.0/24"], "ExitNodeOption": True})}
    assert _seen_from_peers("router", "nRouter", [], statuses) == (
        False,
        "a still sees 192.168.5.0/24 among its PrimaryRoutes, which it no longer advertises",
    )
    statuses["a"] = _peer({"ExitNodeOption": True})
    assert _seen_from_peers("router", "nRouter", [], statuses) == (
        False,
        "a still sees it as an exit node option, which it no longer offers",
    )
    statuses["a"] = _peer({})
    assert _seen_from_peers("router", "nRouter", [], statuses) == (True, "a sees no route of it")


def test_dry_run_lists_the_approvals_tailnix_made_that_the_settings_no_longer_advertise(
    tmp_path: Path,
) -> None:
    record = node_of(STATUS)
    assert record is not None
    approved = ("192.168.5.0/24", "192.168.6.0/24", "0.0.0.0/0", "::/0")
    update_records(tmp_path, {"gw": replace(record, approved_routes=approved), "desk": record})
    hosts = [
        FleetHost("gw", ("all",), {"tailscale_advertise_routes": ["192.168.5.0/24"]}),
        FleetHost("desk", ("all",), {}),
        FleetHost("new", ("all",), {}),
    ]
    withdrawals = read_withdrawals(tmp_path / "inventory.py", hosts)
    assert withdrawals == {"gw": ["192.168.6.0/24", "0.0.0.0/0", "::/0"]}
    assert withdrawal_change(withdrawals["gw"]) == (
        "withdraw the approval of 192.168.6.0/24 and the exit node through the Tailscale API: no longer advertised"
    )


def test_a_record_locked_by_another_run_is_waited_for_a_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tailnix.node_records.LOCK_WAIT_SECONDS", 0.2)
    holder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(NodeRecordError, match="another tailnix run kept its directory locked for 0.2s"):
            update_records(tmp_path, {"box": node_of(STATUS)})
    finally:
        os.close(holder)
    update_records(tmp_path, {"box": node_of(STATUS)})
    assert list(read_records(tmp_path)) == ["box"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]  # no lock file, no leftover


def test_a_record_that_cannot_be_written_is_said_on_stderr_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tailnix deploy` reads pyinfra's stdout as JSON: the playbook's words about the record go to stderr."""
    (tmp_path / RECORD_FILE).write_text("not json")
    record = node_of(STATUS)
    assert record is not None
    node_records._SEEN["box"] = record
    try:
        node_records._write_seen(tmp_path)
    finally:
        node_records._SEEN.clear()
    said = capsys.readouterr()
    assert said.out == ""
    assert f"tailnix: the nodes seen were not recorded in {tmp_path / RECORD_FILE}: " in said.err
