"""Deploying as a non-root admin with sudo (`ssh_user: deploy`, `_sudo: True`), as fleets without root logins do.

The killed deploy and the rollback for want of a confirmation run for sudo hosts in test_rollback.py, a
failed switch in test_faults.py, and the fleet commands (bootstrap, rotate-key, status, forget) in
test_fleet.py, whose second host is one; here: the first deploy, the redeploy, the lock, and a sudo that
asks for a password.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix_lab.hosts import Lab, LabHost

from .deploying import CONVERGED, SUDO_USER, SWITCH, deploy, etc_nixos, start_deploy, write_secrets

pytestmark = pytest.mark.lab

TAILNIX = Path(sys.executable).parent / "tailnix"
PLACED = (
    "/etc/nixos/secrets",
    "/etc/nixos/secrets/tailscale.yaml",
    "/etc/nixos/tailscale-autoconnect.nix",
    "/etc/nixos/configuration.nix",
    "/var/lib/tailnix",
    "/var/lib/tailnix/applied",
)


@pytest.fixture
def sudo_host(lab: Lab) -> Iterator[LabHost]:
    """A fresh NixOS host whose inventory entry logs in as `deploy`, in wheel with passwordless sudo."""
    host = lab.add_host(os="nixos", sudo_user=SUDO_USER)
    yield host
    lab.stop_host(host.name)


@pytest.fixture
def password_host(lab: Lab) -> Iterator[LabHost]:
    """Like `sudo_host`, but sudo asks `deploy` for a password."""
    host = lab.add_host(os="nixos", sudo_user=SUDO_USER, sudo_password=True)
    yield host
    lab.stop_host(host.name)


@pytest.fixture
def root_host(lab: Lab) -> Iterator[LabHost]:
    host = lab.add_host(os="nixos")
    yield host
    lab.stop_host(host.name)


def _inventory(lab: Lab, host: LabHost, tmp_path: Path, **data: object) -> Path:
    """An inventory of `host` alone, with secrets it can open and `data` added to its own."""
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [host])
    return lab.write_inventory(
        tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets, host_data={host.name: data}
    )


def _owners_and_modes(lab: Lab, name: str) -> list[str]:
    return lab.ssh(name, "stat -c '%n %U:%G %a' " + " ".join(PLACED)).stdout.splitlines()


def test_the_inventory_of_a_sudo_host_logs_in_as_the_admin(
    lab: Lab, sudo_host: LabHost, tmp_path: Path
) -> None:
    inventory = lab.write_inventory(tmp_path / "inventory.py", hosts=[sudo_host.name]).read_text()
    assert f"'ssh_user': '{SUDO_USER}'" in inventory
    assert "'_sudo': True" in inventory
    # The admin is a user of the host itself, in wheel, and not root.
    assert lab.ssh(sudo_host.name, f"id -nG {SUDO_USER}").stdout.split() == [SUDO_USER, "wheel"]


def test_first_deploy_and_redeploy_as_a_sudo_user_match_a_root_deploy(
    lab: Lab, sudo_host: LabHost, root_host: LabHost, tmp_path: Path
) -> None:
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [sudo_host, root_host])
    inventory = lab.write_inventory(
        tmp_path / "inventory.py", hosts=[sudo_host.name, root_host.name], secrets_file=secrets
    )
    run = deploy(inventory)
    assert run.returncode == 0, run
    assert run.changed(SWITCH) == {sudo_host.name, root_host.name}
    assert run.said(sudo_host.name, "switched, and confirmed over a new SSH connection")
    assert run.said(sudo_host.name, "Tailscale is Running")
    # The deploy logged in as the admin, never as root (this test has not logged in to the host yet).
    log = (lab.layout.host_dir(sudo_host.name) / "sshd.log").read_text()
    assert f"Accepted publickey for {SUDO_USER}" in log
    assert "Accepted publickey for root" not in log
    # Root-owned, with the same modes as a deploy as root leaves.
    placed = _owners_and_modes(lab, sudo_host.name)
    assert placed == _owners_and_modes(lab, root_host.name)
    assert f"{PLACED[1]} root:root 600" in placed
    assert f"{PLACED[0]} root:root 700" in placed

    again = deploy(inventory)
    assert again.returncode == 0, again
    assert again.changed(SWITCH) == set()
    assert sudo_host.name in again.ran(CONVERGED)
    assert again.said(sudo_host.name, "Tailscale is Running")


def test_a_sudo_deploy_holds_the_lock_for_as_long_as_it_runs(
    lab: Lab, sudo_host: LabHost, tmp_path: Path
) -> None:
    inventory = _inventory(lab, sudo_host, tmp_path, tailnix_lock_timeout=2)
    first = start_deploy(inventory)
    assert first.stderr is not None
    try:
        # Frozen just after it took the lock (its connection stays open): the lock must still be held.
        for line in first.stderr:
            if "Starting operation: Place the encrypted secrets file" in line:
                first.send_signal(signal.SIGSTOP)
                break
        second = deploy(inventory)
        assert second.returncode != 0
        assert second.said(sudo_host.name, "another deploy holds the lock of this host after 2s of waiting")
    finally:
        first.send_signal(signal.SIGCONT)
    rest = first.stderr.read()
    assert first.wait(timeout=600) == 0, rest
    assert "switched, and confirmed over a new SSH connection" in rest


def test_a_sudo_that_asks_for_a_password_is_refused_at_once_and_nothing_changes(
    lab: Lab, password_host: LabHost, tmp_path: Path
) -> None:
    before = etc_nixos(lab, password_host.name)
    inventory = _inventory(lab, password_host, tmp_path)
    run = deploy(inventory)
    assert run.returncode != 0
    assert run.said(password_host.name, f"{password_host.name}: sudo asks {SUDO_USER} for a password")
    assert run.said(password_host.name, "Nothing was changed on the host")
    assert "sudo password:" not in run.stderr
    assert "Traceback" not in run.stderr
    assert etc_nixos(lab, password_host.name) == before

    status = subprocess.run(
        [str(TAILNIX), "status", "-i", str(inventory)], capture_output=True, text=True, timeout=600
    )
    assert status.returncode != 0
    assert f"{password_host.name}: sudo asks {SUDO_USER} for a password" in status.stdout + status.stderr
    assert "EOFError" not in status.stdout + status.stderr


def test_a_sudo_password_in_the_inventory_is_refused_and_never_sent(
    lab: Lab, password_host: LabHost, tmp_path: Path
) -> None:
    before = etc_nixos(lab, password_host.name)
    run = deploy(_inventory(lab, password_host, tmp_path, _sudo_password="lab"), "-vv")
    assert run.returncode != 0
    assert run.said(password_host.name, "tailnix does not deploy with a sudo password")
    assert "PYINFRA_SUDO_PASSWORD" not in run.stderr
    assert etc_nixos(lab, password_host.name) == before
