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
from tailnix_lab.demo import render_own_fleet
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab

from .deploying import SWITCH, DeployRun, write_secrets
from .installing import install_product

pytestmark = pytest.mark.lab


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a fresh virtualenv holding the product's wheel and its dependencies, and nothing else."""
    return install_product(tmp_path_factory.mktemp("install"))


def run(
    command: list[str], cwd: Path, bin_directory: Path, _input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a command as a user of the installed tool: its virtualenv first on PATH, nothing of the checkout.

    `env` adds variables; one given as "" is removed, as in a shell where it was never set.
    """
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
        env={k: v for k, v in {**environment, **env, "PATH": os.pathsep.join(path)}.items() if v != ""},
        input=_input,
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


def test_the_readmes_first_hosts_path_with_the_installed_tool(
    lab: Lab, installed: Path, tmp_path: Path
) -> None:
    """The README's "Your first hosts", step by step, as a new user runs it: an installed tailnix, no
    virtualenv activated, no checkout, a home without an age key; only the inventory's hosts come from the
    lab (its own-fleet.py), and the auth key from the lab's control plane."""
    home = tmp_path / "home"
    home.mkdir()
    user = {"HOME": str(home), "SOPS_AGE_KEY_FILE": "", "XDG_CONFIG_HOME": ""}
    tailnix = str(installed / "tailnix")
    fleet = tmp_path / "myfleet"

    init = run([tailnix, "init", "myfleet"], tmp_path, installed, **user)
    assert init.returncode == 0, init.stdout + init.stderr
    admin_key = home / ".config" / "sops" / "age" / "keys.txt"
    assert init.stdout.startswith(f"made an admin age key in {admin_key} (age1")
    assert "  cd myfleet && tailnix rotate-key --no-deploy" in init.stdout

    key = ControlPlane(lab.layout.control).mint_key(reusable=True)
    created = run([tailnix, "rotate-key", "--no-deploy"], fleet, installed, _input=key + "\n", **user)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "secrets/hosts/admins.yaml: created with the new auth key on " in created.stdout

    host = lab.add_host(os="nixos")
    try:
        (fleet / "inventory.py").write_text(render_own_fleet(lab.layout, [host]))
        bootstrap = run(
            [tailnix, "bootstrap", host.name, "--yes", "--known-hosts", "known_hosts"],
            fleet,
            installed,
            **user,
        )
        assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
        assert f"{host.name}: recorded its host key in {fleet / 'known_hosts'}" in bootstrap.stdout
        assert f"{host.name}: recipient added (age1" in bootstrap.stdout
        assert "1 host deployed: 1 ok, 0 failed" in bootstrap.stdout

        deploy = run([tailnix, "deploy"], fleet, installed, **user)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert f"{host.name}  ok      no        Tailscale is Running as {host.name}" in deploy.stdout
        status = run([tailnix, "status"], fleet, installed, **user)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.rstrip().endswith("1 of 1 hosts healthy; mesh complete")
        check = run([tailnix, "check"], fleet, installed, **user)
        assert check.returncode == 0, check.stdout + check.stderr
        assert not any(fleet.rglob("keys.txt")), "the admin key must not be in the fleet repository"
    finally:
        lab.stop_host(host.name)
