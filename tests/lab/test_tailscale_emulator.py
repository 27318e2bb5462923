"""The emulated `tailscale` CLI, tailscaled state and control plane, driven as a user would."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tailnix_lab.emulator.control import ControlPlane

from .tmphost import emulator_env

STARTUP_SECONDS = 0.5


@dataclass
class Host:
    """One emulated host: its own root, the shared control plane."""

    root: Path
    control: Path

    def env(self) -> dict[str, str]:
        return emulator_env(self.root, self.control)

    def tailscale(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/usr/bin/python3", "-m", "tailnix_lab.emulator.tailscale", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def daemon(self, action: str) -> None:
        subprocess.run(
            [
                "/usr/bin/python3",
                "-c",
                f"from tailnix_lab.emulator import tailscaled; tailscaled.{action}()",
            ],
            env=self.env(),
            check=True,
        )

    def start_and_settle(self) -> None:
        self.daemon("start")
        time.sleep(STARTUP_SECONDS + 0.05)

    def status(self) -> dict[str, object]:
        result = self.tailscale("status", "--json")
        assert result.returncode == 0, result.stderr
        status: dict[str, object] = json.loads(result.stdout)
        return status

    def prefs(self) -> dict[str, object]:
        result = self.tailscale("debug", "prefs")
        assert result.returncode == 0, result.stderr
        prefs: dict[str, object] = json.loads(result.stdout)
        return prefs


@pytest.fixture
def control_dir(tmp_path: Path) -> Path:
    return tmp_path / "control"


@pytest.fixture
def control(control_dir: Path) -> ControlPlane:
    return ControlPlane(control_dir)


@pytest.fixture
def make_host(tmp_path: Path, control_dir: Path) -> Callable[[str], Host]:
    def make(name: str) -> Host:
        root = tmp_path / name
        (root / "etc").mkdir(parents=True)
        (root / "etc/hostname").write_text(f"{name}\n")
        return Host(root=root, control=control_dir)

    return make


@pytest.fixture
def host(make_host: Callable[[str], Host]) -> Host:
    return make_host("nixos-1")


def key_file(tmp_path: Path, key: str) -> str:
    path = tmp_path / "auth-key"
    # Surrounding whitespace is trimmed by the real CLI, as a secret file often ends in \n.
    path.write_text(f"  {key}\n")
    return f"file:{path}"


@pytest.fixture
def running_host(host: Host, control: ControlPlane, tmp_path: Path) -> Host:
    host.start_and_settle()
    result = host.tailscale("up", f"--auth-key={key_file(tmp_path, control.mint_key())}")
    assert result.returncode == 0, result.stderr
    return host


def test_every_command_fails_when_the_daemon_is_not_running(host: Host) -> None:
    for args in (["status"], ["up"], ["ip"], ["set", "--ssh"], ["down"], ["debug", "prefs"]):
        result = host.tailscale(*args)
        assert result.returncode == 1, args
        assert "failed to connect to local tailscaled; it doesn't appear to be running" in (result.stderr)


def test_a_started_daemon_is_nostate_then_needs_login(host: Host) -> None:
    host.daemon("start")
    assert host.status()["BackendState"] == "NoState"
    time.sleep(STARTUP_SECONDS + 0.05)
    status = host.status()
    assert status["BackendState"] == "NeedsLogin"
    assert status["TailscaleIPs"] is None
    plain = host.tailscale("status")
    assert plain.returncode == 1
    assert "Logged out." in plain.stdout


def test_up_with_a_key_from_a_file_reaches_running_with_ips(
    host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    host.start_and_settle()
    result = host.tailscale("up", f"--auth-key={key_file(tmp_path, control.mint_key())}")
    assert result.returncode == 0, result.stderr
    status = host.status()
    assert status["BackendState"] == "Running"
    assert status["TailscaleIPs"] == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    self_status = status["Self"]
    assert isinstance(self_status, dict)
    assert self_status["HostName"] == "nixos-1"
    assert self_status["Online"] is True
    assert self_status["DNSName"] == "nixos-1.tailnix-lab.ts.net."
    assert host.tailscale("ip", "-4").stdout == "100.64.0.1\n"
    assert host.tailscale("ip", "-6").stdout == "fd7a:115c:a1e0::1\n"
    assert (host.root / "var/lib/tailscale/tailscaled.state").exists()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ("expire", "backend error: invalid key: API key does not exist"),
        ("unknown", "backend error: invalid key: API key does not exist"),
        ("used", "not valid"),
    ],
)
def test_a_bad_key_is_refused_and_the_node_stays_logged_out(
    host: Host,
    make_host: Callable[[str], Host],
    control: ControlPlane,
    tmp_path: Path,
    spoil: str,
    message: str,
) -> None:
    key = control.mint_key(reusable=spoil != "used")
    if spoil == "expire":
        control.expire_key(key)
    elif spoil == "unknown":
        key = key[:-4] + "AAAA"
    elif spoil == "used":
        other = make_host("nixos-0")
        other.start_and_settle()
        assert other.tailscale("up", f"--auth-key={key_file(tmp_path, key)}").returncode == 0
    host.start_and_settle()
    result = host.tailscale("up", f"--auth-key={key_file(tmp_path, key)}")
    assert result.returncode == 1
    assert message in result.stderr
    status = host.status()
    assert status["BackendState"] == "NeedsLogin"
    health = status["Health"]
    assert isinstance(health, list)
    assert health and health[0].startswith("You are logged out. The last login error was: ")


def test_up_without_a_key_prints_the_login_url_and_times_out(host: Host) -> None:
    host.start_and_settle()
    result = host.tailscale("up", "--timeout=0.2s")
    assert result.returncode == 1
    assert "To authenticate, visit:\n\n\thttps://login.tailscale.com/a/" in result.stderr
    assert "timeout waiting for Tailscale service to enter a Running state" in result.stderr


def test_up_refuses_changed_settings_without_reset(running_host: Host) -> None:
    assert running_host.tailscale("up", "--ssh", "--advertise-routes=10.0.0.0/24").returncode == 0
    result = running_host.tailscale("up", "--hostname=other")
    assert result.returncode == 1
    assert "requires mentioning all\nnon-default flags" in result.stderr
    assert "tailscale up --hostname=other --advertise-routes=10.0.0.0/24 --ssh" in result.stderr
    assert running_host.prefs()["Hostname"] == ""


def test_up_with_reset_changes_settings_without_a_new_login(
    running_host: Host, control: ControlPlane
) -> None:
    assert running_host.tailscale("up", "--ssh").returncode == 0
    logins_before = len(control.logins())
    result = running_host.tailscale("up", "--reset", "--hostname=renamed")
    assert result.returncode == 0, result.stderr
    prefs = running_host.prefs()
    assert prefs["Hostname"] == "renamed"
    assert prefs["RunSSH"] is False
    assert len(control.logins()) == logins_before
    assert running_host.status()["BackendState"] == "Running"


def test_up_again_on_a_running_node_with_a_key_does_not_log_in_again(
    running_host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    fresh_key = key_file(tmp_path, control.mint_key())
    assert running_host.tailscale("up", f"--auth-key={fresh_key}").returncode == 0
    assert running_host.tailscale("up").returncode == 0
    assert len(control.logins()) == 1


def test_set_changes_prefs_without_a_login(running_host: Host, control: ControlPlane) -> None:
    result = running_host.tailscale("set", "--ssh", "--advertise-exit-node", "--hostname=edge")
    assert result.returncode == 0, result.stderr
    prefs = running_host.prefs()
    assert prefs["RunSSH"] is True
    assert prefs["AdvertiseRoutes"] == ["0.0.0.0/0", "::/0"]
    assert prefs["Hostname"] == "edge"
    assert len(control.logins()) == 1
    assert running_host.tailscale("set", "--advertise-tags=tag:x").returncode == 2


def test_down_stops_and_up_brings_back_running(running_host: Host) -> None:
    assert running_host.tailscale("down").returncode == 0
    status = running_host.status()
    assert status["BackendState"] == "Stopped"
    assert status["Health"] == ["Tailscale is stopped."]
    assert running_host.tailscale("up").returncode == 0
    assert running_host.status()["BackendState"] == "Running"


def test_two_nodes_see_each_other_as_peers(
    make_host: Callable[[str], Host], control: ControlPlane, tmp_path: Path
) -> None:
    key = key_file(tmp_path, control.mint_key(tags=("tag:server",)))
    first, second = make_host("alpha"), make_host("beta")
    for node in (first, second):
        node.start_and_settle()
        assert node.tailscale("up", f"--auth-key={key}").returncode == 0
    peers = first.status()["Peer"]
    assert isinstance(peers, dict)
    (peer,) = peers.values()
    assert peer["HostName"] == "beta"
    assert peer["Online"] is True
    assert peer["Tags"] == ["tag:server"]
    second.daemon("stop")
    peers = first.status()["Peer"]
    assert isinstance(peers, dict)
    assert [p["Online"] for p in peers.values()] == [False]
    assert "beta" in first.tailscale("status").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--no-such-flag"], "flag provided but not defined: -no-such-flag"),
        (["up", "--ssh=maybe"], 'invalid boolean value "maybe" for -ssh: parse error'),
        (["up", "--hostname"], "flag needs an argument: -hostname"),
        (["status", "--peers=nope"], 'invalid boolean value "nope" for -peers: parse error'),
    ],
)
def test_bad_flags_are_rejected_like_go_flag(host: Host, args: list[str], message: str) -> None:
    result = host.tailscale(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message + "\n")
    assert "USAGE" in result.stderr


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--advertise-routes=10.0.0.1/24", "10.0.0.1/24 has non-address bits set"),
        ("--advertise-routes=10.0.0.1", '"10.0.0.1" is not a valid IP address or CIDR prefix'),
        ("--advertise-tags=server", "tags must start with 'tag:'"),
        ("--hostname=bad_name", "not a valid DNS label"),
        ("--netfilter-mode=maybe", 'invalid value --netfilter-mode="maybe"'),
    ],
)
def test_bad_values_are_refused_before_any_login(
    host: Host, control: ControlPlane, flag: str, message: str
) -> None:
    host.start_and_settle()
    result = host.tailscale("up", flag)
    assert result.returncode == 1
    assert message in result.stderr
    assert control.logins() == []


def test_every_call_is_logged_and_a_file_key_never_appears(
    running_host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    running_host.tailscale("status", "--json")
    log = running_host.root / "var/log/tailnix-lab/tailscale-argv.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["argv"][1] for e in entries] == ["up", "status"]
    assert entries[0]["argv"][1].startswith("up")
    assert entries[0]["argv"][2].startswith("--auth-key=file:")
    assert {"time", "argv", "env_names", "uid", "ppid"} <= set(entries[0])
    assert "TAILNIX_LAB_CONTROL" in entries[0]["env_names"]
    assert "tskey-auth-" not in log.read_text()


def test_the_control_plane_keeps_no_key_in_clear(control: ControlPlane, control_dir: Path) -> None:
    key = control.mint_key(reusable=False, tags=("tag:ci",))
    assert key.startswith("tskey-auth-k")
    secret = key.rsplit("-", 1)[1]
    for path in control_dir.iterdir():
        assert secret not in path.read_text()


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["up", "--audience=api://tailnet"], "audience"),
        (["up", "--linux-fwmark-mask=0xff0000"], "linux-fwmark-mask"),
        (["set", "--sync"], "sync"),
        (["set", "--relay-server-static-endpoints=192.0.2.1:7"], "relay-server-static-endpoints"),
        (["set", "--auth-key=file:/dev/null"], "auth-key"),
        (["up", "--nickname=work"], "nickname"),
        (["up", "--foo"], "foo"),
    ],
)
def test_flags_outside_the_pinned_release_are_not_defined(host: Host, args: list[str], name: str) -> None:
    """Only the flags of the pinned release exist, refused in Go's own words with exit 2.

    Source: tailscale v1.90.6 `cmd/tailscale/cli/up.go` (`newUpFlagSet`) and `set.go`
    (`newSetFlagSet`) define the flags; `cli.go` `newFlagSet` makes each set `flag.ExitOnError`, and
    Go's `src/flag/flag.go` (`parseOne`) fails with "flag provided but not defined: -%s", prints the
    usage and exits 2. `--sync` and `--relay-server-static-endpoints` came in 1.92, `--audience` in
    1.94, the Linux mark flags after 1.98; `--auth-key` is `up`'s only and `--nickname` `set`'s only.
    """
    result = host.tailscale(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"flag provided but not defined: -{name}\n")
    assert "USAGE" in result.stderr
