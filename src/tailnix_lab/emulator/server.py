"""The resident emulator of a lab host: `python3 -m tailnix_lab.emulator.server`.

A real NixOS host answers `tailscale status` in a few milliseconds: the CLI is a small client of
the resident tailscaled. A new Python interpreter per emulated call costs ten times that, and a
benchmark of a fleet would measure the lab instead of the tool. So every emulated command in a
host's `/usr/local/sbin` is a link to `tailnix-lab-exec` (exec_client.c), which sends its argv,
environment, working directory, umask and standard streams to this server over a Unix socket in the
host's private `/run`. The server, with every emulator already imported, forks a child per call;
the child takes the caller's streams, environment, directory and umask and runs the emulator's
`main`. The caller forwards the signals it gets to the child and ends as the child ended.

The child behaves as the emulator run by a new interpreter would, with one difference that cannot
be seen from outside: its process is not the caller's. `os.getppid()` in it returns the caller's
parent, as the emulator's argv log expects.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import os
import selectors
import signal
import socket
import struct
import sys
import traceback
from typing import TextIO, cast

SOCKET_PATH = "/run/tailnix-lab-emulator.sock"
PROTOCOL = "tailnix-lab-exec 1"
MODULES = ("tailscale", "systemctl", "journalctl", "systemd_run", "nixos_version", "nixos_rebuild")
"""The emulators a host's commands run; all imported once, before the first call."""
MAX_REQUEST = 4 * 1024 * 1024
REQUEST_TIMEOUT_SECONDS = 10.0


class BadRequest(Exception):
    """A request this server cannot run: the caller is told, and exits 70."""


class Request:
    """One call: which emulator, with what, for whom."""

    def __init__(self, payload: bytes, fds: list[int]) -> None:
        fields = [field.decode("utf-8", "surrogateescape") for field in payload.split(b"\0")[:-1]]
        if len(fields) < 7 or fields[0] != PROTOCOL:
            raise BadRequest(f"not a {PROTOCOL} request")
        self.module = fields[1]
        if self.module not in MODULES:
            raise BadRequest(f"no emulator named {self.module!r}")
        self.cwd = fields[2]
        self.umask = int(fields[3])
        self.ppid = int(fields[4])
        streams = fields[5]
        count = int(fields[6])
        self.args = fields[7 : 7 + count]
        self.env = dict(entry.partition("=")[::2] for entry in fields[7 + count :] if "=" in entry)
        targets = [int(c) for c in streams if c.isdigit()]
        if len(targets) != len(fds):
            raise BadRequest(f"{len(fds)} descriptors for the streams {streams!r}")
        self.streams = dict(zip(targets, fds, strict=True))


def _read_request(connection: socket.socket) -> Request:
    connection.settimeout(REQUEST_TIMEOUT_SECONDS)
    data, fds, _flags, _address = socket.recv_fds(connection, 65536, 3)
    try:
        while len(data) < 4:
            more = connection.recv(65536)
            if not more:
                raise BadRequest("the caller hung up")
            data += more
        (length,) = struct.unpack(">I", data[:4])
        if length > MAX_REQUEST:
            raise BadRequest(f"a request of {length} bytes")
        while len(data) < 4 + length:
            more = connection.recv(65536)
            if not more:
                raise BadRequest("the caller hung up")
            data += more
        return Request(data[4 : 4 + length], fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _become_caller(request: Request) -> None:
    """Take the caller's standard streams, directory, umask, environment and parent."""
    for target in (0, 1, 2):
        if target in request.streams:
            os.dup2(request.streams[target], target)
        else:
            with contextlib.suppress(OSError):
                os.close(target)
    for fd in request.streams.values():
        if fd > 2:
            os.close(fd)
    os.umask(request.umask)
    with contextlib.suppress(OSError):
        os.chdir(request.cwd)  # a caller's directory that is gone: a new interpreter would run too
    os.environ.clear()
    os.environ.update(request.env)
    caller_parent = request.ppid
    os.getppid = lambda: caller_parent  # the caller is this process, as far as anyone can tell
    sys.stdin = _stream(0, "r")
    sys.stdout = _stream(1, "w")
    sys.stderr = _stream(2, "w", errors="backslashreplace")


def _run_emulator(request: Request) -> int:
    """Run the emulator's main as `python3 -m` would; return the exit code."""
    module = importlib.import_module(f"tailnix_lab.emulator.{request.module}")
    sys.argv = [str(module.__file__), *request.args]
    try:
        code = _exit_code(module.main(request.args))
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except KeyboardInterrupt:
        raise  # the caller decides what an interrupted emulator means
    except BaseException:
        traceback.print_exc()
        code = 1
    _flush()
    return code


def _run_child(request: Request, inherited: list[socket.socket], wake_fds: tuple[int, int]) -> None:
    """In the forked child: become the caller's process, run the emulator, never return."""
    code = 70
    try:
        for sock in inherited:
            sock.close()
        signal.set_wakeup_fd(-1)
        for fd in wake_fds:
            os.close(fd)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _become_caller(request)
        try:
            code = _run_emulator(request)
        except KeyboardInterrupt:
            # As Python does: a process ended by an unhandled Ctrl-C dies of SIGINT.
            _flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(code)


def answers_inline(module: str, args: list[str]) -> bool:
    """Whether a call only reads the node's state: those the server answers itself, without a fork.

    As the real tailscaled answers `status` over its LocalAPI: a fork of the server costs a few
    milliseconds more than the question does, and a deploy asks two of them on every host.
    """
    return module == "tailscale" and (
        args[:1] in (["status"], ["ip"], ["version"]) or args[:2] == ["debug", "prefs"]
    )


def _run_inline(request: Request) -> int:
    """Run a read-only call in the server itself, then put the server back as it was."""
    saved_fds = {fd: os.dup(fd) for fd in (0, 1, 2)}
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_umask = os.umask(0o022)
    saved = (sys.stdin, sys.stdout, sys.stderr, sys.argv, os.getppid)
    code = 70
    try:
        _become_caller(request)
        code = _run_emulator(request)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    finally:
        _flush()
        for fd, copy in saved_fds.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        os.umask(saved_umask)
        sys.stdin, sys.stdout, sys.stderr, sys.argv, os.getppid = saved
    return code


def _stream(fd: int, mode: str, errors: str = "strict") -> TextIO:
    try:
        os.fstat(fd)
    except OSError:
        return io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    # As a new interpreter would: line-buffered on a terminal, block-buffered otherwise.
    buffering = 1 if mode == "w" and os.isatty(fd) else -1
    stream = open(fd, mode, buffering=buffering, encoding="utf-8", errors=errors, closefd=False)  # noqa: SIM115
    return cast(TextIO, stream)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _status_line(status: int) -> bytes:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}\n".encode()
    return f"exit {os.waitstatus_to_exitcode(status)}\n".encode()


def serve(path: str = SOCKET_PATH) -> None:
    """Answer calls until killed."""
    for name in MODULES:
        importlib.import_module(f"tailnix_lab.emulator.{name}")
    # What is imported now is shared with every child: keep the collector off it, or each child
    # copies the pages it walks.
    gc.freeze()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o077)
    listener.bind(path)
    os.umask(old_mask)
    listener.listen(128)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "listener")
    selector.register(wake_read, selectors.EVENT_READ, "wake")
    child_of: dict[socket.socket, int] = {}
    caller_of: dict[int, socket.socket] = {}

    def hang_up(connection: socket.socket) -> None:
        selector.unregister(connection)
        child_of.pop(connection, None)
        connection.close()

    while True:
        for key, _events in selector.select():
            if key.data == "listener":
                connection, _ = listener.accept()
                try:
                    request = _read_request(connection)
                except (BadRequest, OSError, ValueError) as error:
                    sys.stderr.write(f"tailnix-lab-exec server: refused a call: {error}\n")
                    sys.stderr.flush()
                    with contextlib.suppress(OSError):
                        connection.sendall(f"exit 70\n{error}\n".encode())
                    connection.close()
                    continue
                if answers_inline(request.module, request.args):
                    try:
                        code = _run_inline(request)
                    except Exception:  # the server must outlive any call it answers
                        traceback.print_exc()
                        code = 70
                    with contextlib.suppress(OSError):
                        connection.sendall(f"exit {code}\n".encode())
                    connection.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    _run_child(request, [listener, connection, *child_of], (wake_read, wake_write))
                for fd in request.streams.values():
                    os.close(fd)
                connection.setblocking(False)
                child_of[connection] = pid
                caller_of[pid] = connection
                selector.register(connection, selectors.EVENT_READ, "caller")
            elif key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_read, 512):
                        pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    caller = caller_of.pop(pid, None)
                    if caller is not None and caller in child_of:
                        with contextlib.suppress(OSError):
                            caller.setblocking(True)
                            caller.sendall(_status_line(status))
                        hang_up(caller)
            else:
                peer = key.fileobj
                assert isinstance(peer, socket.socket)
                if peer not in child_of:
                    continue  # hung up earlier in this round: its child ended
                pid = child_of[peer]
                try:
                    data = peer.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    # The peer is gone (killed): so is the process it stood for.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    hang_up(peer)
                    continue
                for line in data.split():
                    with contextlib.suppress(ValueError, ProcessLookupError, OSError):
                        os.kill(pid, int(line))


def main(argv: list[str]) -> int:
    """Serve on the socket given as the only argument, or on the host's usual one."""
    serve(argv[0] if argv else SOCKET_PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
