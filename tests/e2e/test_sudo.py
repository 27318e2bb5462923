"""Deploying as a non-root admin with sudo (`ssh_user: deploy`, `_sudo: True`), as fleets without root logins do.

The killed deploy and the rollback for want of a confirmation run for sudo hosts in test_rollback.py,
and the fleet commands (bootstrap, rotate-key, status, forget) in test_fleet.py, whose second host is
one; here: the first deploy, the redeploy, a failed switch, the lock, and a sudo that asks for a password.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix.lab.hosts import Lab, LabHost

from .deploying import CONVERGED, PYINFRA, REPOSITORY, SUDO_USER, SWITCH, deploy, etc_nixos, write_secrets

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


def test_a_failed_switch_as_a_sudo_user_restores_etc_nixos(
    lab: Lab, sudo_host: LabHost, tmp_path: Path
) -> None:
    lab.ssh(
        sudo_host.name,
        "sed -i 's/services.openssh.enable = true;/services.openssh.enable = true;\\n  services.tailscal.enable = true;/' "
        "/etc/nixos/configuration.nix",
    )
    before = etc_nixos(lab, sudo_host.name)
    generation = lab.ssh(sudo_host.name, "readlink /run/current-system").stdout
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [sudo_host])
    run = deploy(lab.write_inventory(tmp_path / "inventory.py", hosts=[sudo_host.name], secrets_file=secrets))
    assert run.returncode != 0
    assert run.said(sudo_host.name, "The option `services.tailscal' does not exist")
    assert run.said(
        sudo_host.name,
        "nixos-rebuild switch failed (exit 1: the configuration did not evaluate or build; /etc/nixos restored)",
    )
    assert etc_nixos(lab, sudo_host.name) == before
    assert lab.ssh(sudo_host.name, "readlink /run/current-system").stdout == generation


def test_a_sudo_deploy_holds_the_lock_for_as_long_as_it_runs(
    lab: Lab, sudo_host: LabHost, tmp_path: Path
) -> None:
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [sudo_host])
    inventory = lab.write_inventory(
        tmp_path / "inventory.py",
        hosts=[sudo_host.name],
        secrets_file=secrets,
        host_data={sudo_host.name: {"tailnix_lock_timeout": 2}},
    )
    first = subprocess.Popen(
        [str(PYINFRA), "-y", str(inventory), "deploys/tailscale.py"],
        cwd=REPOSITORY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [password_host])
    inventory = lab.write_inventory(
        tmp_path / "inventory.py", hosts=[password_host.name], secrets_file=secrets
    )
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
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [password_host])
    inventory = lab.write_inventory(
        tmp_path / "inventory.py",
        hosts=[password_host.name],
        secrets_file=secrets,
        host_data={password_host.name: {"_sudo_password": "lab"}},
    )
    run = deploy(inventory, "-vv")
    assert run.returncode != 0
    assert run.said(password_host.name, "tailnix does not deploy with a sudo password")
    assert "PYINFRA_SUDO_PASSWORD" not in run.stderr
    assert etc_nixos(lab, password_host.name) == before
