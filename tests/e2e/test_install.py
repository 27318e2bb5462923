"""The product as a user installs it: its wheel alone in a fresh virtualenv, `tailnix init`, and a deploy of
lab hosts from the fleet repository that init wrote, with that virtualenv's pyinfra.

Nothing is downloaded: the wheel is built with the development virtualenv's build backend, and the
dependencies are installed from wheels packed from that virtualenv (see installing.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tailnix.skeleton import CONFIG_FILE, DEPLOY_FILE
from tailnix_lab.hosts import Lab

from .deploying import SWITCH, DeployRun, write_secrets
from .installing import install_product

pytestmark = pytest.mark.lab


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a fresh virtualenv holding the product's wheel and its dependencies, and nothing else."""
    return install_product(tmp_path_factory.mktemp("install"))


def run(command: list[str], cwd: Path, bin_directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command as a user of the installed tool: its virtualenv first on PATH, nothing of the checkout."""
    development = str(Path(sys.executable).parent)
    path = [str(bin_directory)] + [
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p != development
    ]
    environment = {
        key: value for key, value in os.environ.items() if key not in {"VIRTUAL_ENV", "PYTHONPATH"}
    }
    return subprocess.run(
        command,
        cwd=cwd,
        env={**environment, **env, "PATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_installed_wheel_is_the_product_alone(installed: Path, tmp_path: Path) -> None:
    version = run([str(installed / "tailnix"), "--version"], tmp_path, installed)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"tailnix {metadata.version('tailnix')}"
    lab = run([str(installed / "python"), "-c", "import tailnix_lab"], tmp_path, installed)
    assert lab.returncode == 1
    assert "No module named 'tailnix_lab'" in lab.stderr
    help_text = run([str(installed / "tailnix"), "--help"], tmp_path, installed).stdout
    commands = [line.split()[0] for line in help_text.splitlines() if line.startswith("  ") and line.split()]
    assert "init" in commands and "lab" not in commands and "bench" not in commands


def test_a_fleet_written_by_init_deploys_with_the_installed_tool(
    lab: Lab, installed: Path, tmp_path: Path
) -> None:
    # The lab's admin key stands for the one sops finds on an admin's machine.
    init = run(
        [str(installed / "tailnix"), "init", "fleet"],
        tmp_path,
        installed,
        SOPS_AGE_KEY_FILE=str(lab.layout.admin_agekey),
    )
    assert init.returncode == 0, init.stderr
    assert "wrote fleet/deploys/tailscale.py" in init.stdout
    fleet = tmp_path / "fleet"
    host = lab.add_host(os="nixos")
    try:
        # The lab's hosts, recipients and key replace what a user would fill in; the playbook, config.py
        # and group_data/all.py stay as init wrote them.
        secrets, _key = write_secrets(lab, fleet, [host])
        lab.write_inventory(fleet / "inventory.py", hosts=[host.name], secrets_file=secrets)
        result = run(
            [str(installed / "pyinfra"), "-y", "--json", "inventory.py", "deploys/tailscale.py"],
            fleet,
            installed,
        )
        deployed = DeployRun(result.returncode, result.stdout, result.stderr)
        assert deployed.returncode == 0, deployed
        assert deployed.changed(SWITCH) == {host.name}
        assert (fleet / "deploys" / "tailscale.py").read_text() == DEPLOY_FILE
        assert (fleet / "config.py").read_text() == CONFIG_FILE
        status = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)
        assert status["BackendState"] == "Running"

        # `tailnix deploy` from another directory runs in the fleet's directory, with its files.
        again = run(
            [str(installed / "tailnix"), "deploy", "-i", str(fleet / "inventory.py")], tmp_path, installed
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "1 host deployed: 1 ok, 0 failed" in again.stdout
    finally:
        lab.stop_host(host.name)
