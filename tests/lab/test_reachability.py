"""Jobs that outlive their SSH session (`systemd-run`), and hosts that stop answering SSH (exit node)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab, LabHost, is_alive, processes_in_namespace

pytestmark = pytest.mark.lab

BLACK_HOLE_EXIT_NODE = "100.100.100.100"
SHORT_CONNECT_TIMEOUT = 3


def wait_for(check: object, timeout: float = 15.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        time.sleep(0.1)


def new_connection(lab: Lab, name: str, command: str = "echo answered") -> subprocess.CompletedProcess[str]:
    """A new SSH connection that gives up after a short ConnectTimeout."""
    argv = [
        f"ConnectTimeout={SHORT_CONNECT_TIMEOUT}" if arg.startswith("ConnectTimeout=") else arg
        for arg in lab.ssh_command(name)
    ]
    return subprocess.run([*argv, command], capture_output=True, text=True, timeout=30, check=False)


def answers(lab: Lab, name: str) -> bool:
    return new_connection(lab, name).stdout.strip() == "answered"


@pytest.fixture
def joined_host(lab: Lab) -> Iterator[LabHost]:
    """A clean NixOS host running tailscaled, logged in to the lab's tailnet."""
    host = lab.add_host()
    try:
        lab.ssh(host.name, "echo '{ services.tailscale.enable = true; }' > /etc/nixos/tailscale.nix")
        lab.ssh(
            host.name,
            "sed -i 's|./hardware-configuration.nix|& ./tailscale.nix|' /etc/nixos/configuration.nix",
        )
        lab.ssh(host.name, "nixos-rebuild switch")
        key = ControlPlane(lab.layout.control).mint_key()
        lab.ssh(host.name, "umask 077; cat > /root/tailscale-key", input=key)
        lab.ssh(host.name, "tailscale up --auth-key=file:/root/tailscale-key")
        yield host
    finally:
        # Never stop a host twice: its namespace's inode may already belong to another process.
        if is_alive(host):
            lab.stop_host(host.name)


def test_a_detached_job_survives_the_ssh_session_that_started_it(lab: Lab) -> None:
    started = time.monotonic()
    # The session is dropped (ssh killed) right after systemd-run returns, while the job still runs.
    session = subprocess.Popen(
        [
            *lab.ssh_command("nixos-1"),
            "systemd-run --unit=detached-job sh -c 'sleep 2; echo done > /root/detached-job.out; "
            "echo the job finished' && echo started && sleep 60",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert session.stdout is not None
    assert session.stdout.readline().strip() == "started"
    assert time.monotonic() - started < 2, "systemd-run must return before its job ends"
    assert lab.ssh("nixos-1", "systemctl is-active detached-job", check=False).stdout.strip() == "active"
    session.kill()
    session.wait()

    wait_for(lambda: lab.ssh("nixos-1", "cat /root/detached-job.out", check=False).stdout == "done\n")
    assert lab.ssh("nixos-1", "systemctl is-active detached-job", check=False).stdout.strip() == "inactive"
    journal = lab.ssh("nixos-1", "journalctl -u detached-job").stdout
    assert "the job finished" in journal
    assert "detached-job.service: Deactivated successfully." in journal


def test_wait_returns_the_status_of_the_job(lab: Lab) -> None:
    failed = lab.ssh(
        "nixos-1", "systemd-run --wait --unit=waited-job sh -c 'echo working; exit 3'", check=False
    )
    assert failed.returncode == 3
    assert "Running as unit: waited-job.service; invocation ID: " in failed.stderr
    assert "Finished with result: exit-code" in failed.stderr
    assert "Main processes terminated with: code=exited, status=3/NOTIMPLEMENTED" in failed.stderr
    # Without --collect a failed unit stays loaded, and its name taken.
    assert lab.ssh("nixos-1", "systemctl is-active waited-job", check=False).stdout.strip() == "failed"
    assert "working" in lab.ssh("nixos-1", "journalctl -u waited-job").stdout

    collected = lab.ssh("nixos-1", "systemd-run --wait --collect -q --unit=collected-job false", check=False)
    assert (collected.returncode, collected.stderr) == (1, "")
    assert lab.ssh("nixos-1", "systemctl is-active collected-job", check=False).stdout.strip() == "inactive"

    done = lab.ssh("nixos-1", "systemd-run --wait --unit=good-job true", check=False)
    assert done.returncode == 0
    assert "Finished with result: success" in done.stderr


def test_a_unit_name_in_use_is_refused(lab: Lab) -> None:
    lab.ssh("nixos-1", "systemd-run --unit=busy-job sleep 30")
    try:
        again = lab.ssh("nixos-1", "systemd-run --unit=busy-job true", check=False)
        assert again.returncode == 1
        assert again.stderr == (
            "Failed to start transient service unit: "
            "Unit busy-job.service was already loaded or has a fragment file.\n"
        )
    finally:
        lab.ssh("nixos-1", "systemctl stop busy-job")
    assert lab.ssh("nixos-1", "systemctl is-active busy-job", check=False).stdout.strip() == "inactive"
    lab.ssh("nixos-1", "systemd-run --wait --unit=busy-job true")


def test_stopping_a_transient_unit_terminates_its_processes(lab: Lab) -> None:
    """systemd.kill(5): KillMode= defaults to control-group and KillSignal= to SIGTERM, so `systemctl stop`
    sends SIGTERM to every process of the unit, the job's children too."""
    lab.ssh(
        "nixos-1",
        "systemd-run --unit=stopped-job /bin/sh -c "
        "'trap \"echo terminated > /tmp/stopped-job; exit 0\" TERM; sleep 300 & wait'",
    )
    deadline = time.monotonic() + 30
    while lab.ssh("nixos-1", "systemctl is-active stopped-job", check=False).stdout.strip() != "active":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    lab.ssh("nixos-1", "systemctl stop stopped-job")
    assert lab.ssh("nixos-1", "cat /tmp/stopped-job").stdout.strip() == "terminated"
    assert lab.ssh("nixos-1", "systemctl is-active stopped-job", check=False).stdout.strip() == "inactive"


def test_bad_command_lines_are_refused_like_the_real_one(lab: Lab) -> None:
    for command, message in (
        ("systemd-run", "Command line to execute required."),
        ("systemd-run --wait --no-block true", "--wait may not be combined with --no-block."),
        ("systemd-run -p NoSuchThing=1 true", "Unknown assignment: NoSuchThing=1"),
        ("systemd-run --pipe true", "the lab's systemd-run does not emulate --pipe"),
        ("systemd-run --bogus true", "systemd-run: unrecognized option '--bogus'"),
    ):
        result = lab.ssh("nixos-1", command, check=False)
        assert (result.returncode, result.stderr.strip()) == (1, message), command


def test_an_exit_node_cuts_new_ssh_connections_until_it_is_cleared(lab: Lab, joined_host: LabHost) -> None:
    name = joined_host.name
    # A session opened before the cut: it must keep working, and it clears the exit node later.
    session = subprocess.Popen(
        [*lab.ssh_command(name), "echo ready; read go; tailscale set --exit-node= && echo cleared"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert session.stdin is not None and session.stdout is not None
    assert session.stdout.readline().strip() == "ready"

    status = lab.ssh(name, f"tailscale set --exit-node={BLACK_HOLE_EXIT_NODE} && tailscale status --json")
    assert json.loads(status.stdout)["ExitNodeStatus"] == {
        "ID": "",
        "Online": False,
        "TailscaleIPs": [f"{BLACK_HOLE_EXIT_NODE}/32"],
    }
    started = time.monotonic()
    cut = new_connection(lab, name)
    assert cut.returncode == 255
    assert "timed out" in cut.stderr
    assert time.monotonic() - started >= SHORT_CONNECT_TIMEOUT - 0.5
    assert answers(lab, "nixos-2"), "only the host with the exit node is cut"

    session.stdin.write("go\n")
    session.stdin.flush()
    assert session.stdout.readline().strip() == "cleared"
    session.wait(timeout=10)
    assert answers(lab, name)
    assert "ExitNodeStatus" not in json.loads(lab.ssh(name, "tailscale status --json").stdout)

    # The self-rollback pattern: a detached job clears the exit node after the session that set it.
    lab.ssh(
        name,
        f"tailscale set --exit-node={BLACK_HOLE_EXIT_NODE} && "
        "systemd-run --unit=undo-exit-node sh -c 'sleep 8; tailscale set --exit-node='",
    )
    assert not answers(lab, name)
    wait_for(lambda: answers(lab, name), timeout=20)
    assert (
        "undo-exit-node.service: Deactivated successfully."
        in lab.ssh(name, "journalctl -u undo-exit-node").stdout
    )


def test_down_clears_the_exit_route_and_lab_down_stops_a_cut_host(lab: Lab, joined_host: LabHost) -> None:
    name = joined_host.name
    lab.ssh(
        name,
        f"tailscale set --exit-node={BLACK_HOLE_EXIT_NODE} && systemd-run --unit=down sh -c 'sleep 8; tailscale down'",
    )
    assert not answers(lab, name)
    wait_for(lambda: answers(lab, name), timeout=20)

    up = lab.ssh(name, f"tailscale up --exit-node={BLACK_HOLE_EXIT_NODE} && tailscale status --json")
    assert "ExitNodeStatus" in json.loads(up.stdout), up.stderr
    assert not answers(lab, name), up.stderr
    started = time.monotonic()
    lab.stop_host(name)
    assert time.monotonic() - started < 5, "a stopped listener must not wait for the SIGKILL fallback"
    assert processes_in_namespace(joined_host.mount_namespace) == []


def test_an_exit_node_with_lan_access_leaves_ssh_over_the_lan_alone(lab: Lab, joined_host: LabHost) -> None:
    """`--exit-node-allow-lan-access` keeps the host's local networks out of the exit route (tailscale v1.90.6
    `ipn/prefs.go`, ExitNodeAllowLANAccess): the deployer reaching the host over its LAN is still answered."""
    name = joined_host.name
    status = lab.ssh(
        name,
        f"tailscale set --exit-node={BLACK_HOLE_EXIT_NODE} --exit-node-allow-lan-access && tailscale status --json",
    )
    assert "ExitNodeStatus" in json.loads(status.stdout)
    assert answers(lab, name)
