"""`tailnix bootstrap` on hosts the workstation has never seen: their host keys are shown and trusted only
once confirmed, into the known-hosts file the inventory points pyinfra to (`ssh_known_hosts_file`).

The fleet's inventory points its hosts to `known_hosts` beside it (relative: read from the inventory's
directory), which does not exist yet, and checks host keys strictly, so pyinfra can reach a host only once
its key is recorded there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tailnix_lab.hosts import Lab, LabHost

from .deploying import write_secrets

pytestmark = pytest.mark.lab

TAILNIX = Path(sys.executable).parent / "tailnix"


@dataclass
class Fleet:
    lab: Lab
    directory: Path
    hosts: list[LabHost]

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def sops_config(self) -> Path:
        return self.directory / ".sops.yaml"

    def bootstrap(self, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(TAILNIX),
                "bootstrap",
                "--no-deploy",
                "-i",
                str(self.directory / "inventory.py"),
                *arguments,
            ],
            cwd=ELSEWHERE,
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "SOPS_AGE_KEY_FILE": str(self.lab.layout.admin_agekey)},
            timeout=300,
        )


ELSEWHERE = Path("/")


def fingerprint(host: LabHost, directory: Path) -> str:
    """What `ssh-keygen -l` prints for the host's key: `SHA256:...`."""
    public = directory / f"{host.name}.pub"
    public.write_text(host.host_key_public + "\n")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public)], capture_output=True, text=True, check=True
    )
    return listed.stdout.split()[1]


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("unseen")
    hosts = [lab.add_host(os="nixos"), lab.add_host(os="nixos")]
    write_secrets(lab, directory, [])
    lab.write_inventory(
        directory / "inventory.py",
        hosts=[host.name for host in hosts],
        host_data={host.name: {"ssh_known_hosts_file": "known_hosts"} for host in hosts},
        secrets_file=directory / "secrets" / "tailscale.yaml",
    )
    yield Fleet(lab, directory, hosts)
    for host in hosts:
        lab.stop_host(host.name)


def test_a_new_host_key_refused_at_the_prompt_is_not_trusted(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.hosts[0]
    before = fleet.sops_config.read_text()
    run = fleet.bootstrap(host.name, stdin="n\n")
    assert run.returncode == 1
    assert (
        f"{host.name}: new host key, not in {fleet.known_hosts}: ssh-ed25519 {fingerprint(host, tmp_path)}"
        in run.stdout
    )
    assert f"{host.name}: error: its host key was not confirmed; nothing was recorded" in run.stderr
    assert not fleet.known_hosts.exists()
    assert fleet.sops_config.read_text() == before


def test_yes_needs_the_known_hosts_file_named_and_it_must_be_the_inventorys(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    unnamed = fleet.bootstrap(host.name, "--yes")
    assert unnamed.returncode == 2
    assert "--yes trusts new host keys only with --known-hosts FILE" in unnamed.stderr
    other = fleet.bootstrap(host.name, "--yes", "--known-hosts", str(fleet.directory / "elsewhere"))
    assert other.returncode == 2
    assert f"the inventory points {host.name} to {fleet.known_hosts} (ssh_known_hosts_file)" in other.stderr
    assert not fleet.known_hosts.exists()


def test_a_confirmed_host_key_is_recorded_and_the_host_bootstrapped(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.hosts[0]
    run = fleet.bootstrap(host.name, stdin="y\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ssh-ed25519 {fingerprint(host, tmp_path)}" in run.stdout
    assert f"{host.name}: recorded its host key in {fleet.known_hosts}" in run.stdout
    key_type, key = host.host_key_public.split()[:2]
    assert fleet.known_hosts.read_text() == f"[127.0.0.1]:{host.port} {key_type} {key}\n"
    assert f"{fleet.sops_config}: updated" in run.stdout


def test_yes_with_the_known_hosts_file_records_without_asking(fleet: Fleet) -> None:
    host = fleet.hosts[1]
    run = fleet.bootstrap(host.name, "--yes", "--known-hosts", str(fleet.known_hosts))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{host.name}: recorded its host key in {fleet.known_hosts}" in run.stdout
    assert f"[127.0.0.1]:{host.port} " in fleet.known_hosts.read_text()


def test_known_host_keys_are_not_asked_about_again(fleet: Fleet) -> None:
    run = fleet.bootstrap(*(host.name for host in fleet.hosts))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "new host key" not in run.stdout
