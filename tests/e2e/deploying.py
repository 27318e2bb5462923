"""Running the real deploy with the real pyinfra CLI, and reading what a user would see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tailnix import steps
from tailnix.agekey import ssh_public_key_to_age
from tailnix.sops import encrypt_values, run_sops, write_private_file
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab, LabHost

REPOSITORY = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).parent / "pyinfra"
SWITCH = steps.SWITCH
CHECK = steps.PREFLIGHT
VERIFY = steps.VERIFY
CONVERGED = steps.CONVERGED
SUDO_USER = "deploy"
"""The non-root admin of the lab's sudo hosts: in wheel, reached with the lab's key, deploys with `_sudo`."""
PLACING = steps.PLACING


@dataclass(repr=False)
class DeployRun:
    """One `pyinfra -y --json INVENTORY deploys/tailscale.py` run."""

    returncode: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:
        # Shown by pytest when an assertion on a run fails: what the user saw, in full.
        return f"DeployRun(returncode={self.returncode})\n--- stderr:\n{self.stderr}"

    @property
    def results(self) -> dict[str, Any] | None:
        """pyinfra's JSON results, or None when it printed none (every host failed)."""
        start = self.stdout.find("{")
        if start < 0:
            return None
        payload = json.loads(self.stdout[start:])
        results = payload.get("results")
        return results if isinstance(results, dict) else None

    def operation(self, name: str) -> dict[str, Any]:
        """pyinfra's results of one operation; empty when no host ran it (the deploy only adds the
        operations a host needs)."""
        assert self.results is not None, f"no JSON results:\n{self.stderr}"
        for operation in self.results["operations"]:
            if operation["name"] == name or name in operation["names"]:
                return dict(operation)
        return {"name": name, "success": [], "error": [], "no_change": []}

    def changed(self, name: str) -> set[str]:
        """Hosts on which the operation ran commands."""
        return set(self.operation(name)["success"])

    def unchanged(self, name: str) -> set[str]:
        return set(self.operation(name)["no_change"])

    def ran(self, name: str) -> set[str]:
        """Hosts for which the operation was part of the run, whatever it did."""
        operation = self.operation(name)
        return set(operation["success"]) | set(operation["error"]) | set(operation["no_change"])

    def failed_hosts(self) -> set[str]:
        if self.results is None:
            return set()
        return set(self.results["failed_hosts"])

    def lines_of(self, host: str) -> list[str]:
        """What pyinfra printed for one host (`[host] message` lines), without the prefix."""
        prefix = f"[{host}]"
        return [
            line.split("]", 1)[1].strip()
            for line in self.stderr.splitlines()
            if line.strip().startswith(prefix)
        ]

    def said(self, host: str, text: str) -> bool:
        return any(text in line for line in self.lines_of(host))


def deploy(inventory: Path, *arguments: str, env: dict[str, str] | None = None) -> DeployRun:
    """Run the deploy from the repository root, as the README says."""
    return _pyinfra(["-y", "--json", str(inventory), "deploys/tailscale.py", *arguments], env)


def dry_run(inventory: Path) -> DeployRun:
    """`pyinfra --dry --json INVENTORY deploys/tailscale.py`: the plan (`stdout`), nothing changed."""
    return _pyinfra(["--dry", "--json", str(inventory), "deploys/tailscale.py"], None)


def _pyinfra(arguments: list[str], env: dict[str, str] | None) -> DeployRun:
    result = subprocess.run(
        [str(PYINFRA), *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    return DeployRun(result.returncode, result.stdout, result.stderr)


def start_deploy(inventory: Path) -> subprocess.Popen[str]:
    """Start the deploy in the background; its output (stderr, without --json) can be followed line by line."""
    return subprocess.Popen(
        [str(PYINFRA), "-y", str(inventory), "deploys/tailscale.py"],
        cwd=REPOSITORY,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def etc_nixos(lab: Lab, host: str) -> dict[str, str]:
    """Every file under the host's /etc/nixos with its sha256 and mode: to prove nothing changed."""
    listing = lab.ssh(
        host,
        "cd /etc/nixos && find . -print0 | sort -z | xargs -0 stat -c '%n %a %F' && find . -type f -print0 | sort -z | xargs -0 -r sha256sum",
    ).stdout
    return {line.split()[-1] if "  " in line else line.split()[0]: line for line in listing.splitlines()}


def write_secrets(
    lab: Lab,
    directory: Path,
    hosts: Sequence[LabHost],
    *,
    value: str | None = None,
    key_options: dict[str, Any] | None = None,
    rule: dict[str, Any] | None = None,
    header: str = "",
) -> tuple[Path, str]:
    """An encrypted secrets file (and its .sops.yaml) for the admin and `hosts`, with a fresh lab key.

    + rule: more settings of the creation rule (`unencrypted_suffix`, ...)
    + header: text (comments) above the key in the plaintext that sops encrypts

    Returns the file and the auth key inside it.
    """
    auth_key = ControlPlane(lab.layout.control).mint_key(**(key_options or {}))
    admin = subprocess.run(
        ["age-keygen", "-y", str(lab.layout.admin_agekey)], capture_output=True, text=True, check=True
    ).stdout.strip()
    recipients = [admin] + [ssh_public_key_to_age(host.host_key_public) for host in hosts]
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / ".sops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "creation_rules": [
                    {
                        "path_regex": r"secrets/tailscale\.yaml$",
                        "key_groups": [{"age": recipients}],
                        **(rule or {}),
                    }
                ]
            }
        )
    )
    target = directory / "secrets" / "tailscale.yaml"
    values = {"tailscale_auth_key": value if value is not None else f"TAILSCALE_AUTH_KEY={auth_key}"}
    if not header:
        encrypt_values(values, target=target, config=config, age_key_file=lab.layout.admin_agekey)
        return target, auth_key
    plaintext = header + yaml.safe_dump(values)
    encrypted = run_sops(
        ["encrypt", "--filename-override", str(target)], config=config, stdin=plaintext.encode()
    )
    write_private_file(target, encrypted.stdout)
    return target, auth_key


HOLDER = "alice@laptop (pid 4242) since 2026-11-28T09:00:00Z"


def hold_lock(lab: Lab, host: str) -> subprocess.Popen[str]:
    """Another deploy holding the host's lock, as `lock.sh` takes it and says who holds it, until it is
    sent a line (`holder.communicate("done\n")`)."""
    holder = subprocess.Popen(
        [
            *lab.ssh_command(host),
            "install -d -m 0700 /var/lib/tailnix; exec 9>> /var/lib/tailnix/lock; flock 9; "
            f"echo '{HOLDER}' > /var/lib/tailnix/lock.holder; echo held; read line",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder
