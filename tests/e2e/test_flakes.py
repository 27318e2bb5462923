"""Hosts configured by a flake (`nixos-rebuild switch --flake /etc/nixos#HOST`), beside channel hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix import steps
from tailnix_lab.hosts import Lab, LabHost

from .deploying import PLACING, SWITCH, deploy, etc_nixos, write_secrets

pytestmark = pytest.mark.lab

GIT_STEP = steps.GIT_INDEX
TAILNIX = str(Path(sys.executable).parent / "tailnix")


@pytest.fixture
def started(lab: Lab) -> Iterator[list[LabHost]]:
    """Hosts a test starts with `started.append(lab.add_host(...))`, stopped after it."""
    hosts: list[LabHost] = []
    yield hosts
    for host in hosts:
        lab.stop_host(host.name)


def _state(lab: Lab, name: str) -> str:
    return str(json.loads(lab.ssh(name, "tailscale status --json --peers=false").stdout)["BackendState"])


def test_flake_and_channel_hosts_in_one_fleet_both_reach_running(
    lab: Lab, started: list[LabHost], tmp_path: Path
) -> None:
    channel = lab.add_host(os="nixos")
    flake = lab.add_host(os="nixos", flake=True)
    started += [channel, flake]
    lock_before = lab.ssh(flake.name, "sha256sum /etc/nixos/flake.lock").stdout
    secrets, _ = write_secrets(lab, tmp_path, started)
    inventory = lab.write_inventory(
        tmp_path / "inventory.py", hosts=[channel.name, flake.name], secrets_file=secrets
    )
    run = deploy(inventory)
    assert run.returncode == 0, run
    assert run.changed(SWITCH) == {channel.name, flake.name}
    assert _state(lab, channel.name) == _state(lab, flake.name) == "Running"
    assert lab.ssh(flake.name, "sha256sum /etc/nixos/flake.lock").stdout == lock_before
    again = deploy(inventory)
    assert again.returncode == 0, again
    for name in (*PLACING, GIT_STEP, SWITCH):
        assert again.changed(name) == set(), name


def test_git_flake_gets_the_new_files_in_its_index_and_no_commit(
    lab: Lab, started: list[LabHost], tmp_path: Path
) -> None:
    host = lab.add_host(os="nixos", flake=True, git=True)
    started.append(host)
    secrets, _ = write_secrets(lab, tmp_path, [host])
    inventory = lab.write_inventory(tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets)
    run = deploy(inventory)
    assert run.returncode == 0, run
    assert run.said(
        host.name, "added tailscale-autoconnect.nix, secrets/tailscale.yaml to the git index of /etc/nixos"
    )
    assert run.said(host.name, "nothing was committed")
    assert _state(lab, host.name) == "Running"
    assert lab.ssh(host.name, "git -C /etc/nixos rev-list --count HEAD").stdout.strip() == "1"
    status = lab.ssh(host.name, "git -C /etc/nixos status --porcelain").stdout.splitlines()
    assert " A tailscale-autoconnect.nix" in status and " A secrets/tailscale.yaml" in status
    again = deploy(inventory)
    assert again.returncode == 0, again
    assert again.changed(GIT_STEP) == set() and again.changed(SWITCH) == set()


def test_flake_that_does_not_build_from_configuration_nix_gets_the_precise_instruction(
    lab: Lab, started: list[LabHost], tmp_path: Path
) -> None:
    host = lab.add_host(os="nixos", flake="inline")
    started.append(host)
    before = etc_nixos(lab, host.name)
    secrets, _ = write_secrets(lab, tmp_path, [host])
    run = deploy(lab.write_inventory(tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets))
    assert run.returncode != 0
    assert run.said(host.name, "/etc/nixos/flake.nix does not build from ./configuration.nix")
    assert run.said(host.name, "modules = [ ... ./tailscale-autoconnect.nix ];")
    assert etc_nixos(lab, host.name) == before
    # Done as told, the deploy goes through and leaves configuration.nix alone.
    lab.ssh(
        host.name,
        "sed -i 's|        ./hardware-configuration.nix|        ./hardware-configuration.nix\\n"
        "        ./tailscale-autoconnect.nix|' /etc/nixos/flake.nix",
    )
    configuration = lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
    run = deploy(lab.write_inventory(tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets))
    assert run.returncode == 0, run
    assert _state(lab, host.name) == "Running"
    assert lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout == configuration


def test_flake_with_its_own_sops_nix_gets_no_second_copy(
    lab: Lab, started: list[LabHost], tmp_path: Path
) -> None:
    host = lab.add_host(os="nixos", flake="sops-nix")
    started.append(host)
    secrets, _ = write_secrets(lab, tmp_path, [host])
    run = deploy(lab.write_inventory(tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets))
    assert run.returncode == 0, run
    module = lab.ssh(host.name, "cat /etc/nixos/tailscale-autoconnect.nix").stdout
    assert "fetchTarball" not in module
    assert "sops-nix comes from this host's flake" in module
    assert _state(lab, host.name) == "Running"
    # `tailnix module` asks the host, and prints exactly what the deploy placed; --offline does not ask.
    inventory = str(tmp_path / "inventory.py")
    shown = subprocess.run([TAILNIX, "module", host.name, "-i", inventory], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == module
    offline = subprocess.run(
        [TAILNIX, "module", host.name, "-i", inventory, "--offline"], capture_output=True, text=True
    )
    assert offline.returncode == 0 and "fetchTarball" in offline.stdout
