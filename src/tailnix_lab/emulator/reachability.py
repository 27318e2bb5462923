"""Whether a lab host answers new SSH connections: an exit node black-holes them, as a real one can.

A real host reached over Tailscale stops answering when a switch routes all its traffic through
an exit node that cannot carry it: the connection that carried the deploy may survive, a new one
never gets an answer. The lab does the same with its loopback sshd: while the node's prefs use an
exit node (and the daemon runs, the node is logged in and wants to run), the host's sshd listener
is stopped with SIGSTOP. The kernel still completes the TCP handshake, but no SSH banner ever comes,
so a client waits until its ConnectTimeout. Sessions already open run in processes of their own and
keep working.

A small guard process holds the listener stopped and records it in `/run/tailnix-lab-blackhole.json`.
When the exit node is cleared (or tailscaled stops), the guard sends SIGCONT and exits. `tailnix lab
down` sends SIGTERM to every process of the host: the guard then lets the listener go on, so the
listener sees its own SIGTERM and stops.

Outside a lab host (unit tests with `TAILNIX_LAB_HOST_ROOT`), nothing is ever signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from tailnix_lab.emulator.hostroot import HOST_ROOT_ENV

# Every `tailscale` call of a lab host imports this module, and most only check that no black hole
# is due: `signal` is imported by the code that cuts or restores.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LAB_HOSTS_PATH = "/run/tailnix-lab/hosts.json"
"""The lab's record of its hosts (`DIR/state/hosts.json`), with each host's mount namespace."""
RECORD_PATH = "/run/tailnix-lab-blackhole.json"
LOCK_PATH = "/run/tailnix-lab-blackhole.lock"
SSHD = "/usr/sbin/sshd"
TCP_LISTEN = "0A"
SETTLE_SECONDS = 5.0
POLL_SECONDS = 0.02


def inside_lab_host() -> bool:
    """True only in the mount namespace of a host the lab started, never on the machine running it."""
    if os.environ.get(HOST_ROOT_ENV, "/") not in ("", "/"):
        return False
    try:
        own = os.readlink("/proc/self/ns/mnt")
        hosts = json.loads(Path(LAB_HOSTS_PATH).read_text())
    except (OSError, ValueError):
        return False
    return any(isinstance(host, dict) and host.get("mount_namespace") == own for host in hosts)


def _listening_socket_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == TCP_LISTEN:
                inodes.add(fields[9])
    return inodes


def find_listener() -> int | None:
    """The pid of this host's sshd listener: the sshd of this namespace that holds a listening socket."""
    own = os.readlink("/proc/self/ns/mnt")
    listening = {f"socket:[{inode}]" for inode in _listening_socket_inodes()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "mnt") != own or os.readlink(entry / "exe") != SSHD:
                continue
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        if _fd_targets(fds) & listening:
            return int(entry.name)
    return None


def _fd_targets(fds: list[Path]) -> set[str]:
    # sshd opens and closes descriptors while it accepts connections: skip the ones gone meanwhile.
    targets = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            targets.add(os.readlink(fd))
    return targets


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_record() -> dict[str, Any] | None:
    """The black hole in force on this host (guard pid, listener pid, exit node, since), or None."""
    try:
        record: dict[str, Any] = json.loads(Path(RECORD_PATH).read_text())
    except (OSError, ValueError):
        return None
    return record


def enforce(exit_node: str) -> None:
    """Make the host's SSH reachability match the node: cut while `exit_node` is non-empty."""
    if not inside_lab_host():
        return
    lock_fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        record = read_record()
        guarded = record is not None and _alive(int(record["guard"]))
        if exit_node and not guarded:
            _cut(exit_node)
        elif not exit_node and record is not None:
            _restore(record)
    finally:
        os.close(lock_fd)


def _cut(exit_node: str) -> None:
    listener = find_listener()
    deadline = time.monotonic() + SETTLE_SECONDS
    while listener is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        listener = find_listener()
    if listener is None:
        sys.stderr.write("tailnix lab: no sshd listener found in this host; SSH stays reachable\n")
        return
    Path(RECORD_PATH).unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:
        try:
            _guard(listener, exit_node)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + SETTLE_SECONDS
    while read_record() is None and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)


def _restore(record: dict[str, Any]) -> None:
    import signal

    guard, listener = int(record["guard"]), int(record["listener"])
    if _alive(guard):
        with contextlib.suppress(ProcessLookupError):
            os.kill(guard, signal.SIGTERM)
        deadline = time.monotonic() + SETTLE_SECONDS
        while _alive(guard) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    # A guard that was killed cannot let the listener go on: do it here.
    with contextlib.suppress(ProcessLookupError):
        os.kill(listener, signal.SIGCONT)
    Path(RECORD_PATH).unlink(missing_ok=True)


def _guard(listener: int, exit_node: str) -> None:
    """The guard, in a session of its own: hold the listener stopped until told to stop."""
    import signal

    os.setsid()
    if os.fork() != 0:
        return
    # Nothing of the caller's may stay open here: not its SSH pipes, not the tailscaled state lock.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)

    def release(_signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(listener, signal.SIGCONT)
        Path(RECORD_PATH).unlink(missing_ok=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, release)
    signal.signal(signal.SIGINT, release)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.kill(listener, signal.SIGSTOP)
    record = {"guard": os.getpid(), "listener": listener, "exit_node": exit_node, "since": time.time()}
    tmp = Path(f"{RECORD_PATH}.{os.getpid()}")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(RECORD_PATH)
    while True:
        signal.pause()
