"""The peer beside the bench: the deploy's idempotent steps as an Ansible playbook, over the same lab.

`tailnix bench --ansible` runs, beside each no-op redeploy, `ansible-playbook` with four tasks on every
NixOS host of the lab: copy the secrets file, copy the host's module, ensure the import line in
`configuration.nix`, check that `tailscale status` says Running. The files are the very ones tailnix
places (the module rendered by tailnix from the same inventory and group data), so on a converged
fleet both tools have nothing to change, and the two walls compare the cost of finding that out.

What is the same as the pyinfra run: the hosts, the admin key, the lab's `known_hosts` with strict host
key checking, the key exchange (`curve25519-sha256`, which paramiko also uses; OpenSSH's post-quantum
default costs about 100 ms more CPU per connection), one new connection per host per run. What is
Ansible's own: `forks` equal to the host count, pipelining on, no fact gathering, OpenSSH's
ControlMaster (one connection per host reused by the four tasks; the masters are closed after each
run, so that no run starts with connections a previous one opened), and Python on the host
(`/usr/bin/python3` on a lab host; a real NixOS host has no Python unless its configuration adds one).

`ansible-core` is a dependency of the lab only (`lab/pyproject.toml`); the product never needs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tailnix import paths
from tailnix.nixmodule import render_module
from tailnix.settings import parse_settings
from tailnix_lab.hosts import Lab

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
PLAYBOOK_NAME = "tailscale.yml"
HOST_PYTHON = "/usr/bin/python3"
KEY_EXCHANGE = "curve25519-sha256"
RUN_TIMEOUT_SECONDS = 600.0
"""Bound on one ansible-playbook run; the bench says so and stops if it takes longer."""

_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)"
)
_IMPORT_LINE = f"      {paths.MODULE_IMPORT}"
"""The import as tailnix's editor writes it into a stock configuration.nix (under the hardware scan)."""


class AnsibleError(RuntimeError):
    """The Ansible peer could not run, or did not do what tailnix does."""


@dataclass(frozen=True)
class AnsibleRun:
    """One ansible-playbook process: wall, CPU and peak memory, and what its recap counted."""

    seconds: float
    cpu_seconds: float
    max_rss_kib: int
    """The largest resident set of one process of the run (ansible-playbook, a fork, an ssh)."""
    changed: int
    """Tasks that changed something, summed over hosts (PLAY RECAP's changed=)."""


def playbook() -> list[dict[str, object]]:
    """The play: the deploy's steps on a converged host, each idempotent."""
    return [
        {
            "name": "Tailscale on NixOS, the steps of deploys/tailscale.py",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Place the sops-encrypted secrets file",
                    "ansible.builtin.copy": {
                        "src": "{{ tailnix_secrets_file }}",
                        "dest": paths.SECRETS_FILE,
                        "owner": "root",
                        "group": "root",
                        "mode": "0600",
                    },
                },
                {
                    "name": "Place the host's NixOS module",
                    "ansible.builtin.copy": {
                        "src": "modules/{{ inventory_hostname }}.nix",
                        "dest": paths.MODULE_FILE,
                        "owner": "root",
                        "group": "root",
                        "mode": "0644",
                    },
                },
                {
                    "name": "Import the module in configuration.nix",
                    "ansible.builtin.lineinfile": {
                        "path": paths.CONFIGURATION_FILE,
                        "regexp": r"^\s*" + re.escape(paths.MODULE_IMPORT) + r"\s*$",
                        "line": _IMPORT_LINE,
                        "insertafter": r"^\s*\./hardware-configuration\.nix",
                    },
                },
                {
                    "name": "Check that Tailscale is Running",
                    "ansible.builtin.command": "tailscale status --json --peers=false",
                    "register": "status",
                    "changed_when": False,
                    "failed_when": "(status.stdout | from_json).BackendState != 'Running'",
                },
            ],
        }
    ]


def ansible_config(forks: int, known_hosts: Path, control_dir: Path) -> str:
    """ansible.cfg: forks for every host at once, pipelining, the pyinfra run's SSH settings."""
    ssh_args = " ".join(
        [
            "-o ControlMaster=auto",
            "-o ControlPersist=60s",
            "-o IdentitiesOnly=yes",
            f"-o KexAlgorithms={KEY_EXCHANGE}",
            f"-o UserKnownHostsFile={known_hosts}",
            "-o StrictHostKeyChecking=yes",
        ]
    )
    return (
        "# Written by `tailnix bench --ansible` for one run; see tailnix_lab/ansible_peer.py.\n"
        "[defaults]\n"
        f"forks = {forks}\n"
        "host_key_checking = True\n"
        f"interpreter_python = {HOST_PYTHON}\n"
        "retry_files_enabled = False\n"
        "nocolor = True\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
        f"ssh_args = {ssh_args}\n"
        f"control_path_dir = {control_dir}\n"
    )


def _make_inventory_data(inventory: Path, repository: Path) -> dict[str, dict[str, object]]:
    """Each host's data as the bench's pyinfra run sees it: the inventory with the repository's group_data."""
    from pyinfra.api.state import State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    with ctx_state.use(State()):
        loaded = make_inventory(str(inventory), cwd=str(repository))
    return {host.name: dict(host.data.dict()) for host in loaded}


@dataclass(frozen=True)
class AnsiblePeer:
    """The files of the Ansible peer: in `directory`, and its ControlMaster sockets in `control_dir`.

    The sockets live in a short directory of their own under /tmp: a Unix socket's path has at most 107
    bytes, and a lab directory (pytest's, for one) can be longer than that alone.
    """

    directory: Path
    control_dir: Path

    @classmethod
    def write(cls, lab: Lab, repository: Path, directory: Path) -> AnsiblePeer:
        """Write the Ansible inventory, configuration, playbook and per-host modules to `directory`.

        Every NixOS host of the lab's inventory gets the module tailnix renders for it, from the same
        settings the deploy reads (the lab's inventory and the group_data of `repository`).
        """
        hosts = [host for host in lab.hosts if host.os == "nixos"]
        data = _make_inventory_data(lab.layout.inventory, repository)
        modules = directory / "modules"
        modules.mkdir(parents=True, exist_ok=True)
        inventory_hosts: dict[str, dict[str, object]] = {}
        for host in hosts:
            settings = parse_settings(host.name, data[host.name], base_dir=repository)
            (modules / f"{host.name}.nix").write_text(render_module(settings))
            inventory_hosts[host.name] = {
                "ansible_host": "127.0.0.1",
                "ansible_port": host.port,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(lab.layout.ssh_key),
                "tailnix_secrets_file": str(settings.secrets_file.resolve()),
            }
        (directory / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": inventory_hosts}}))
        (directory / PLAYBOOK_NAME).write_text(yaml.safe_dump(playbook(), sort_keys=False))
        control_dir = Path(tempfile.mkdtemp(prefix="tailnix-ansible-", dir="/tmp"))
        config = ansible_config(len(hosts), lab.layout.known_hosts, control_dir)
        (directory / "ansible.cfg").write_text(config)
        return cls(directory, control_dir)

    def remove_sockets(self) -> None:
        """Close the connections still open and remove the sockets' directory."""
        self.close_connections()
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def close_connections(self) -> None:
        """Close the ControlMaster connections a run left (they would outlive it by ControlPersist)."""
        for socket_path in sorted(self.control_dir.iterdir()):
            subprocess.run(
                ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "lab-host"],
                capture_output=True,
                timeout=10,
                check=False,
            )

    def run(self) -> AnsibleRun:
        """Run the playbook once (see `run_playbook`)."""
        return run_playbook(self)


def _environment(directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(directory / "ansible.cfg"),
        # Ansible's own files (collections cache, temporary files) stay in the run's directory.
        "ANSIBLE_HOME": str(directory / "home"),
        "ANSIBLE_LOCAL_TEMP": str(directory / "tmp"),
        "PYTHONUNBUFFERED": "1",
    }


def run_playbook(peer: AnsiblePeer) -> AnsibleRun:
    """Run the playbook once; time it, its CPU (with its forks and their ssh) and its peak memory.

    Raises AnsibleError when ansible-playbook is missing, fails on a host, or runs past its bound.
    """
    if not ANSIBLE_PLAYBOOK.exists():
        raise AnsibleError(
            f"{ANSIBLE_PLAYBOOK} not found: ansible-core is a dependency of the lab (pip install -e ./lab)"
        )
    directory = peer.directory
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(directory / "inventory.yml"), str(directory / PLAYBOOK_NAME)]
    timed_out = threading.Event()
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(directory),
        # A group of its own: a run past its bound is killed with its forks, which hold its output open.
        start_new_session=True,
    )
    assert process.stdout is not None

    def stop() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(RUN_TIMEOUT_SECONDS, stop)
    timer.start()
    try:
        output = process.stdout.read()
        # wait4 rather than Popen.wait: the usage it returns includes the forks and ssh clients the run reaped.
        _pid, status, usage = os.wait4(process.pid, 0)
        ended = time.monotonic()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    finally:
        timer.cancel()
        # Not timed: the masters would linger on their own (ControlPersist), nobody waits for them.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            peer.close_connections()
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = output.splitlines()
    if timed_out.is_set():
        raise AnsibleError(f"ansible-playbook did not finish within {RUN_TIMEOUT_SECONDS:.0f} s")
    if process.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise AnsibleError(f"ansible-playbook exited {process.returncode}:\n{tail}")
    recap = [match for line in lines if (match := _RECAP.match(line))]
    if not recap:
        raise AnsibleError("ansible-playbook printed no PLAY RECAP:\n" + "\n".join(lines[-40:]))
    return AnsibleRun(
        seconds=ended - started,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_kib=usage.ru_maxrss,
        changed=sum(int(match["changed"]) for match in recap),
    )
