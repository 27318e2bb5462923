"""A host's emulated commands answered by its resident emulator server, through `tailnix-lab-exec`.

The server and the compiled client run here on a host root in a tmp dir, with a socket of the test's
own: the caller must not be able to tell the difference from a new interpreter per call, except in
how long it takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tailnix_lab.emulator import server
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import EMULATED_COMMANDS, build_exec_client

from .tmphost import SRC, emulator_env

DEADLINE_SECONDS = 20.0


@dataclass
class ServedHost:
    root: Path
    control: Path
    bin_dir: Path
    socket: Path
    server: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return emulator_env(self.root, self.control)

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def in_new_interpreter(self, *args: str) -> subprocess.CompletedProcess[str]:
        module = EMULATED_COMMANDS[args[0]]
        return subprocess.run(
            ["/usr/bin/python3", "-S", "-m", f"tailnix_lab.emulator.{module}", *args[1:]],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start_daemon(self) -> None:
        subprocess.run(
            ["/usr/bin/python3", "-c", "from tailnix_lab.emulator import tailscaled; tailscaled.start()"],
            env=self.env(),
            check=True,
        )
        _wait_for(lambda: "NeedsLogin" in self.run("tailscale", "status", "--json").stdout, "NeedsLogin")

    def children_of_server(self) -> list[int]:
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.server.pid and fields[0] != "Z":
                children.append(int(entry.name))
        return children


def _wait_for(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"still waiting, after {DEADLINE_SECONDS}s, for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("exec")
    socket_path = directory / "emulator.sock"
    build_exec_client(directory / "tailnix-lab-exec", socket_path=str(socket_path), pylib=str(SRC))
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for command in EMULATED_COMMANDS:
        (bin_dir / command).symlink_to(directory / "tailnix-lab-exec")
    return bin_dir, socket_path


@pytest.fixture
def host(tmp_path: Path, client: tuple[Path, Path]) -> Iterator[ServedHost]:
    bin_dir, socket_path = client
    root, control = tmp_path / "root", tmp_path / "control"
    root.mkdir()
    control.mkdir()
    process = subprocess.Popen(
        ["/usr/bin/python3", "-S", "-m", "tailnix_lab.emulator.server", str(socket_path)],
        env=emulator_env(root, control),
        stdin=subprocess.DEVNULL,
        stderr=(tmp_path / "server.log").open("wb"),
    )
    served = ServedHost(root, control, bin_dir, socket_path, process)
    _wait_for(socket_path.exists, "the server's socket")
    yield served
    process.kill()
    process.wait()
    socket_path.unlink(missing_ok=True)


def test_every_emulated_command_has_an_emulator_the_server_imports() -> None:
    for command, module in EMULATED_COMMANDS.items():
        assert module == command.replace("-", "_") and module in server.MODULES, command


@pytest.mark.parametrize(
    "args",
    [
        ("tailscale", "version"),
        ("tailscale", "status"),
        ("tailscale", "--bogus"),
        ("tailscale", "up", "--advertise-tags=server"),
        ("systemctl", "is-active", "tailscaled.service"),
        ("nixos-version", "--json"),
    ],
)
def test_a_call_gives_the_same_output_and_exit_code_as_a_new_interpreter(
    host: ServedHost, args: tuple[str, ...]
) -> None:
    served = host.run(*args)
    fresh = host.in_new_interpreter(*args)
    assert (served.returncode, served.stdout, served.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def _blocking_up(host: ServedHost) -> subprocess.Popen[str]:
    """`tailscale up` without a key on a started daemon: it prints the login URL and waits, forever."""
    host.start_daemon()
    process = subprocess.Popen(
        [str(host.bin_dir / "tailscale"), "up"],
        env=host.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    while "To authenticate, visit:" not in process.stderr.readline():
        pass
    return process


def test_the_call_runs_in_a_child_of_the_server_not_in_a_new_interpreter(host: ServedHost) -> None:
    process = _blocking_up(host)
    assert Path(f"/proc/{process.pid}/exe").resolve().name == "tailnix-lab-exec"
    assert len(host.children_of_server()) == 1
    process.kill()
    process.wait()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_reaches_the_emulator_and_the_caller_ends_as_it_did(host: ServedHost, number: int) -> None:
    process = _blocking_up(host)
    process.send_signal(number)
    # Python turns SIGINT into KeyboardInterrupt and then dies of SIGINT; the others kill outright.
    assert process.wait(timeout=DEADLINE_SECONDS) == -number
    _wait_for(lambda: host.children_of_server() == [], "the emulator to end")


def test_a_killed_caller_takes_its_emulator_with_it(host: ServedHost) -> None:
    process = _blocking_up(host)
    process.kill()
    process.wait()
    _wait_for(lambda: host.children_of_server() == [], "the emulator to be killed")


def test_the_callers_stdin_umask_and_directory_are_the_emulators(host: ServedHost, tmp_path: Path) -> None:
    host.start_daemon()
    key = ControlPlane(host.control).mint_key()
    joined = host.run("tailscale", "up", "--auth-key=file:/dev/stdin", stdin=key + "\n")
    assert joined.returncode == 0, joined.stderr
    assert '"BackendState": "Running"' in host.run("tailscale", "status", "--json").stdout
    # A relative path resolves against the caller's directory; a closed stdout stays closed.
    listing = subprocess.run(
        f"cd {tmp_path} && umask 077 && {host.bin_dir}/nixos-version >&- 2>err; echo $?",
        shell=True,
        env=host.env(),
        capture_output=True,
        text=True,
    )
    fresh = subprocess.run(
        f"cd {tmp_path} && umask 077 && /usr/bin/python3 -S -m tailnix_lab.emulator.nixos_version >&- "
        "2>err.fresh; echo $?",
        shell=True,
        env=host.env(),
        capture_output=True,
        text=True,
    )
    assert listing.stdout == fresh.stdout
    assert (tmp_path / "err").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "err").read_text() == (tmp_path / "err.fresh").read_text()


def test_a_call_the_server_answers_itself_leaves_nothing_behind_for_the_next(host: ServedHost) -> None:
    assert server.answers_inline("tailscale", ["status", "--json"])
    assert not server.answers_inline("tailscale", ["up"]) and not server.answers_inline(
        "systemctl", ["status"]
    )
    first = subprocess.run(
        [str(host.bin_dir / "tailscale"), "version"],
        env={**host.env(), "TAILNIX_TEST_ONLY_FIRST": "1"},
        cwd="/tmp",
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr
    second = host.run("tailscale", "--bogus")
    assert second.returncode == 2 and "flag provided but not defined: -bogus" in second.stderr
    calls = [
        json.loads(line)
        for line in (host.root / "var/log/tailnix-lab/tailscale-argv.jsonl").read_text().splitlines()
    ]
    assert [call["argv"] for call in calls] == [["tailscale", "version"], ["tailscale", "--bogus"]]
    assert "TAILNIX_TEST_ONLY_FIRST" in calls[0]["env_names"]
    assert "TAILNIX_TEST_ONLY_FIRST" not in calls[1]["env_names"]
    assert calls[0]["ppid"] == calls[1]["ppid"] == os.getpid()


def test_without_a_server_the_command_runs_in_a_new_interpreter(host: ServedHost) -> None:
    host.server.kill()
    host.server.wait()
    assert host.run("tailscale", "version").stdout == host.in_new_interpreter("tailscale", "version").stdout
    process = _blocking_up(host)
    assert Path(f"/proc/{process.pid}/exe").resolve().name.startswith("python3")
    process.kill()
    process.wait()


def test_the_server_socket_is_root_only(host: ServedHost) -> None:
    assert host.socket.stat().st_mode & 0o077 == 0
    assert os.stat(host.socket).st_uid == 0


def test_the_server_answers_from_the_control_plane_as_it_is_now(host: ServedHost, tmp_path: Path) -> None:
    """The resident server keeps its parse of the control plane between calls only while no one has
    changed it: a node the control plane logs out (here, from another process) is NeedsLogin at the next
    `tailscale status` it answers, as tailscaled learns it from control (`ipn/ipnlocal/local.go`,
    `nextStateLocked`: a node whose key control expired needs a login)."""
    host.start_daemon()
    control = ControlPlane(host.control)
    key_file = tmp_path / "auth-key"
    key_file.write_text(control.mint_key() + "\n")
    up = host.run("tailscale", "up", f"--auth-key=file:{key_file}")
    assert up.returncode == 0, up.stderr
    for _ in range(3):  # answered from the same parse each time
        assert json.loads(host.run("tailscale", "status", "--json").stdout)["BackendState"] == "Running"
    (node,) = control.nodes()
    control.logout(node["ID"])
    assert json.loads(host.run("tailscale", "status", "--json").stdout)["BackendState"] == "NeedsLogin"
