"""The lab's data: where a lab keeps its files, and what it knows of each host.

`LabLayout` is the single source of truth for the layout of a lab directory (see docs/lab.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HOST_LAB_MOUNT = "/run/tailnix-lab"
"""Where `DIR/state` appears inside every host."""

STANDIN_URL = f"file://{HOST_LAB_MOUNT}/sops-nix-standin.tar.gz"
"""The sops-nix pin's URL as a host's Nix evaluator sees it."""

EXEC_CLIENT_NAME = "tailnix-lab-exec"
"""The program every emulated command of a host links to (see tailnix_lab.emulator.server)."""


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class LabHost:
    """One emulated host: its name, the loopback port of its sshd, its OS and SSH host key."""

    name: str
    port: int
    os: str
    host_key_public: str
    """The host's `ssh-ed25519 AAAA...` public key line, without a comment."""
    pid: int
    """The pid of the host's sshd (which is also the namespace's first process)."""
    mount_namespace: str
    """`readlink /proc/PID/ns/mnt` of the host when it started, e.g. `mnt:[4026532300]`."""
    flake: str | None = None
    """The style of the host's `/etc/nixos/flake.nix` (`stock.FLAKE_STYLES`); None: no flake."""
    git: bool = False
    """Whether the host's `/etc/nixos` is a git repository (everything committed at start)."""
    sudo_user: str | None = None
    """A non-root admin user in `wheel`, who logs in with the lab's key and deploys through sudo."""
    sudo_password: bool = False
    """Whether that user's sudo asks for a password (by default it is `NOPASSWD`)."""


@dataclass(frozen=True)
class LabLayout:
    """The paths of a lab directory (see docs/lab.md)."""

    root: Path

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.py"

    @property
    def ssh_key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "ssh" / "known_hosts"

    @property
    def admin_agekey(self) -> Path:
        return self.root / "admin.agekey"

    @property
    def sops_config(self) -> Path:
        return self.root / ".sops.yaml"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets" / "tailscale.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def pylib(self) -> Path:
        return self.state / "pylib"

    @property
    def sops_binary(self) -> Path:
        return self.state / "bin" / "sops"

    @property
    def exec_client(self) -> Path:
        return self.state / "bin" / EXEC_CLIENT_NAME

    @property
    def control(self) -> Path:
        return self.state / "control"

    @property
    def standin_tarball(self) -> Path:
        return self.state / "sops-nix-standin.tar.gz"

    @property
    def standin_sha256(self) -> Path:
        return self.state / "sops-nix-standin.sha256"

    @property
    def own_fleet(self) -> Path:
        """The hosts as a fleet made by `tailnix init` lists them in its inventory.py."""
        return self.root / "own-fleet.py"

    @property
    def api_env(self) -> Path:
        """The stand-in API's address and OAuth client, for `set -a; . DIR/api.env`."""
        return self.root / "api.env"

    @property
    def api_pid(self) -> Path:
        return self.state / "api.pid"

    @property
    def hosts_json(self) -> Path:
        return self.state / "hosts.json"

    def host_dir(self, name: str) -> Path:
        """The directory of one host's private files (upper dirs, /root, /tmp, /usr/local/sbin)."""
        return self.root / "hosts" / name

    def lab_made_paths(self) -> list[Path]:
        """Everything `lab up` writes, so that a new lab can start from nothing."""
        return [
            self.root / "hosts",
            self.state,
            self.root / "ssh",
            self.root / "secrets",
            self.inventory,
            self.admin_agekey,
            self.sops_config,
            self.api_env,
        ]
