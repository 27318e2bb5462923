"""Every fleet command run from another directory (`/`, as cron does) with `-i /path/to/inventory.py`.

The fleet is one `tailnix init` made, with its relative paths (`tailnix_secrets_file = "secrets/tailscale.yaml"`,
`.sops.yaml` beside it): they are read from the inventory's directory, never from the current one. The
tests run in the order of a fleet's life and share one fresh lab host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab, LabHost

from .deploying import write_secrets

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
ELSEWHERE = Path("/")


@dataclass
class Fleet:
    lab: Lab
    directory: Path
    host: LabHost

    @property
    def inventory(self) -> Path:
        return self.directory / "inventory.py"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOPS_AGE_KEY_FILE": str(self.lab.layout.admin_agekey)}

    def tailnix(self, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`tailnix ARGUMENTS -i /abs/inventory.py`, run in `/`."""
        return subprocess.run(
            [str(BIN / "tailnix"), *arguments, "-i", str(self.inventory)],
            cwd=ELSEWHERE,
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=600,
        )


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("anywhere") / "fleet"
    # The lab's admin key stands for the one sops finds on an admin's machine.
    subprocess.run(
        [str(BIN / "tailnix"), "init", str(directory)],
        check=True,
        capture_output=True,
        env={**os.environ, "SOPS_AGE_KEY_FILE": str(lab.layout.admin_agekey)},
    )
    host = lab.add_host(os="nixos")
    write_secrets(lab, directory, [])  # the admin only: bootstrap adds the host
    lab.write_inventory(
        directory / "inventory.py",
        hosts=[host.name],
        # As `tailnix init` writes it: relative to the fleet's directory.
        host_data={host.name: {"tailnix_secrets_file": "secrets/tailscale.yaml"}},
    )
    yield Fleet(lab, directory, host)
    lab.stop_host(host.name)


def test_bootstrap_from_another_directory_records_and_deploys(fleet: Fleet) -> None:
    run = fleet.tailnix("bootstrap", fleet.host.name)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{fleet.directory / '.sops.yaml'}: updated" in run.stdout
    assert f"{fleet.host.name}: ok, switched" in run.stdout


def test_pyinfra_from_the_fleet_directory_still_deploys(fleet: Fleet) -> None:
    run = subprocess.run(
        [str(BIN / "pyinfra"), "-y", "inventory.py", "deploys/tailscale.py"],
        cwd=fleet.directory,
        capture_output=True,
        text=True,
        env=fleet.env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "No changes" in run.stderr


def test_dry_run_status_and_module_from_another_directory(fleet: Fleet) -> None:
    dry = fleet.tailnix("deploy", "--dry")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == f"{fleet.host.name}: nothing to do\n"
    status = fleet.tailnix("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "1 of 1 hosts healthy" in status.stdout
    module = fleet.tailnix("module", fleet.host.name)
    assert module.returncode == 0, module.stderr
    assert "services.tailscale" in module.stdout


def test_rotate_key_and_check_from_another_directory(fleet: Fleet) -> None:
    key = ControlPlane(fleet.lab.layout.control).mint_key(reusable=True)
    rotate = fleet.tailnix("rotate-key", "--no-deploy", stdin=key + "\n")
    assert rotate.returncode == 0, rotate.stderr
    assert f"{fleet.directory / 'secrets' / 'tailscale.yaml'}: new auth key set" in rotate.stdout
    check = fleet.tailnix("check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_deploy_from_another_directory_reads_the_fleets_files(fleet: Fleet) -> None:
    run = fleet.tailnix("deploy")  # the new key changed the secrets file
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{fleet.host.name}: ok, switched" in run.stdout


def test_forget_from_another_directory(fleet: Fleet) -> None:
    forget = fleet.tailnix("forget", fleet.host.name)
    assert forget.returncode == 0, forget.stdout + forget.stderr
    assert f"{fleet.directory / '.sops.yaml'}: updated" in forget.stdout
