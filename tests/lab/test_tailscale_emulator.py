"""The emulated `tailscale` CLI, tailscaled state and control plane, driven as a user would."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from unit.names_corpus import HOSTNAME_CORPUS, TAG_CORPUS

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


def test_set_refuses_auto_update_on_nixos(running_host: Host) -> None:
    """tailscale v1.90.6 `cmd/tailscale/cli/set.go`: `--auto-update`, true or false, fails where
    `clientupdate.CanAutoUpdate()` is false, and clientupdate has no updater for NixOS."""
    for value in ("--auto-update", "--auto-update=false"):
        result = running_host.tailscale("set", value)
        assert result.returncode == 1
        assert "automatic updates are not supported on this platform" in result.stderr
    assert running_host.prefs()["AutoUpdate"]["Apply"] is None


def test_set_refuses_a_nickname_another_login_profile_of_the_node_has(running_host: Host) -> None:
    """tailscale v1.90.6 `cmd/tailscale/cli/set.go` (`runSet`: `localClient.CheckPrefs` before
    `EditPrefs`) and `ipn/ipnlocal/local.go` (`checkProfileNameLocked`): a profile name held by another
    login profile of the node is refused, `profile name "work" already in use`, exit 1, prefs unchanged;
    the current profile's own name, or a free one, is taken."""
    state_file = running_host.root / "var/lib/tailscale/tailscaled.state"
    state = json.loads(state_file.read_text())
    state["OtherProfiles"] = ["work"]  # as a `tailscale login --nickname=work` of the node's past left it
    state_file.write_text(json.dumps(state))
    refused = running_host.tailscale("set", "--nickname=work")
    assert (refused.returncode, refused.stderr) == (1, 'profile name "work" already in use\n')
    assert running_host.prefs()["ProfileName"] == ""
    assert running_host.tailscale("set", "--nickname=home").returncode == 0
    assert running_host.prefs()["ProfileName"] == "home"


def test_down_stops_and_up_brings_back_running(running_host: Host) -> None:
    """Source: tailscale v1.90.6 `cmd/tailscale/cli/status.go` (`runStatus`: in a state that is not
    Running or Starting, the health check is printed only in NoState; `isRunningOrStarting`)."""
    assert running_host.tailscale("down").returncode == 0
    status = running_host.status()
    assert status["BackendState"] == "Stopped"
    assert status["Health"] == ["Tailscale is stopped."]
    plain = running_host.tailscale("status")
    assert (plain.returncode, plain.stdout) == (1, "Tailscale is stopped.\n")
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


def test_tags_and_hostnames_are_refused_in_the_real_cli_s_words(host: Host, control: ControlPlane) -> None:
    """Every refusal of the corpus the settings share: stderr is the CLI's sentence, exit 1, no login.

    Source: tailscale v1.90.6 `cmd/tailscale/cli/up.go` (`prefsFromUpArgs`: `tag: %q: %s` from
    `tailcfg.CheckTag`, `dnsname.ValidHostname`'s error as it is; `fatalf`, exit 1), `tailcfg/tailcfg.go`,
    `util/dnsname/dnsname.go`.
    """
    host.start_and_settle()
    cases = [(f"--advertise-tags=tag:ok,{tag}", refusal) for tag, refusal in TAG_CORPUS if refusal]
    cases += [(f"--hostname={name}", refusal) for name, refusal in HOSTNAME_CORPUS if refusal]
    wrong = []
    for flag, refusal in cases:
        result = host.tailscale("up", flag)
        if (result.returncode, result.stderr) != (1, refusal + "\n"):
            wrong.append(f"{flag!r}: exit {result.returncode}, {result.stderr!r}")
    assert not wrong, "\n".join(wrong)
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
    key = control.mint_key(reusable=False, tags=("tag:server",))
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


# --- the control plane's policy and the node states it decides ----------------------------------


def self_of(status: dict[str, object]) -> dict[str, object]:
    own = status["Self"]
    assert isinstance(own, dict)
    return own


def node_id_of(host: Host) -> str:
    node_id = self_of(host.status())["ID"]
    assert isinstance(node_id, str) and node_id
    return node_id


def test_a_node_is_granted_only_tags_the_key_owner_owns(
    make_host: Callable[[str], Host], control: ControlPlane, tmp_path: Path
) -> None:
    """The policy's tagOwners decide: the admin owns tag:server and tag:web, nothing else.

    Source: the control server answers a RegisterRequest whose Hostinfo.RequestTags it does not permit
    with `RegisterResponse.Error` (tailscale v1.90.6 `control/controlclient/direct.go`, `resp.Error` ->
    `UserVisibleError`), which `cmd/tailscale/cli/up.go` prints as "backend error: %v" and exits 1. The
    text is the SaaS one, which headscale copies (`hscontrol/state/state.go`,
    `ErrRequestedTagsInvalidOrNotPermitted`: "requested tags [tag:xxx] are invalid or not permitted").
    Granted tags are `Self.Tags` (`ipn/ipnstate/ipnstate.go`, PeerStatus.Tags).
    """
    key = key_file(tmp_path, control.mint_key())
    server, stranger = make_host("alpha"), make_host("beta")
    for node in (server, stranger):
        node.start_and_settle()
    granted = server.tailscale("up", f"--auth-key={key}", "--advertise-tags=tag:web,tag:server")
    assert granted.returncode == 0, granted.stderr
    assert self_of(server.status())["Tags"] == ["tag:server", "tag:web"]

    refused = stranger.tailscale("up", f"--auth-key={key}", "--advertise-tags=tag:server,tag:db")
    assert refused.returncode == 1
    assert "backend error: requested tags [tag:db] are invalid or not permitted" in refused.stderr
    status = stranger.status()
    assert status["BackendState"] == "NeedsLogin"
    assert "Tags" not in self_of(status)
    assert [r["reason"] for r in control.rejections()] == ["tags"]
    with pytest.raises(ValueError, match=r"requested tags \[tag:db\] are invalid or not permitted"):
        control.mint_key(tags=("tag:db",))


def test_up_with_changed_tags_on_a_running_node_goes_down_the_login_path(
    running_host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    """`up` edits prefs in place only when Running, without a key or --force-reauth, tags unchanged.

    Source: tailscale v1.90.6 `cmd/tailscale/cli/up.go`, `updatePrefs`: `tagsChanged` makes `justEdit`
    false, so `up` calls `Start` with the new prefs, and the new tags reach control as
    Hostinfo.RequestTags (`ipn/ipnlocal/local.go`, `hi.RequestTags = prefs.AdvertiseTags()`): control
    wants the node to log in again, and `up` shows the login URL and waits. With --force-reauth and a
    key, `up` logs in again (`StartLoginInteractive`, a new registration) and control grants the tags.
    """
    changed = running_host.tailscale("up", "--advertise-tags=tag:web", "--timeout=0.3s")
    assert changed.returncode == 1
    assert "To authenticate, visit:\n\n\thttps://login.tailscale.com/a/" in changed.stderr
    assert "timeout waiting for Tailscale service to enter a Running state" in changed.stderr
    assert running_host.status()["BackendState"] == "NeedsLogin"
    assert len(control.logins()) == 1

    key = key_file(tmp_path, control.mint_key())
    reauth = running_host.tailscale("up", "--force-reauth", f"--auth-key={key}", "--advertise-tags=tag:web")
    assert reauth.returncode == 0, reauth.stderr
    status = running_host.status()
    assert status["BackendState"] == "Running"
    assert self_of(status)["Tags"] == ["tag:web"]
    assert len(control.logins()) == 2


def test_a_refused_retag_leaves_the_granted_tags_alone(
    running_host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    """A re-registration asking for a tag the owner does not own is refused; the node keeps its tags.

    Source: headscale `hscontrol/state/state.go`, `applyAuthNodeUpdate` validates RequestTags before
    changing the node; tailscale v1.90.6 `cmd/tailscale/cli/up.go` prints `backend error: ...`.
    """
    key = key_file(tmp_path, control.mint_key())
    result = running_host.tailscale("up", "--force-reauth", f"--auth-key={key}", "--advertise-tags=tag:db")
    assert result.returncode == 1
    assert "backend error: requested tags [tag:db] are invalid or not permitted" in result.stderr
    (node,) = control.nodes()
    assert not node.get("Tags")
    assert running_host.status()["BackendState"] == "NeedsLogin"


def test_a_node_waits_for_device_approval_in_needs_machine_auth(
    host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    """A tailnet with device approval holds a node whose key is not pre-authorized until an admin approves.

    Source: tailscale v1.90.6 `ipn/ipnlocal/local.go`, `nextStateLocked`: a netmap whose machine status
    is not `MachineAuthorized` gives `NeedsMachineAuth`; `cmd/tailscale/cli/up.go`,
    `printDeviceApprovalInfo`: "To approve your machine, visit (as admin):" and `Prefs.AdminPageURL`
    (`ipn/prefs.go`: the control URL + "/admin"), then `up` waits for Running; `cmd/tailscale/cli/status.go`
    (`isRunningOrStarting`) prints "Machine is not yet approved by tailnet admin." and exits 1.
    """
    control.set_device_approval(True)
    key = key_file(tmp_path, control.mint_key(preauthorized=False))
    host.start_and_settle()
    waiting = host.tailscale("up", f"--auth-key={key}", "--timeout=0.3s")
    assert waiting.returncode == 1
    assert "To approve your machine, visit (as admin):\n\n\thttps://login.tailscale.com/admin\n\n" in (
        waiting.stderr
    )
    assert "timeout waiting for Tailscale service to enter a Running state" in waiting.stderr
    assert host.status()["BackendState"] == "NeedsMachineAuth"
    plain = host.tailscale("status")
    assert plain.returncode == 1
    assert plain.stdout == "Machine is not yet approved by tailnet admin.\n"

    # A bare `up` now waits for the approval, and says Success once an admin gives it.
    process = subprocess.Popen(
        ["/usr/bin/python3", "-m", "tailnix_lab.emulator.tailscale", "up"],
        env=host.env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = ""
    while "/admin\n" not in seen:
        line = process.stderr.readline()
        assert line, seen
        seen += line
    control.authorize(node_id_of(host))
    assert process.wait(timeout=30) == 0
    assert "Success." in process.stderr.read()
    assert host.status()["BackendState"] == "Running"


def test_a_preauthorized_key_skips_device_approval(host: Host, control: ControlPlane, tmp_path: Path) -> None:
    """Source: tailscale API v2 keys `capabilities.devices.create.preauthorized` (documented at
    tailscale.com/api): devices logged in with such a key need no approval."""
    control.set_device_approval(True)
    host.start_and_settle()
    result = host.tailscale("up", f"--auth-key={key_file(tmp_path, control.mint_key(preauthorized=True))}")
    assert result.returncode == 0, result.stderr
    assert host.status()["BackendState"] == "Running"


def test_the_api_stand_in_approves_a_device_and_disables_its_key_expiry(
    host: Host, control: ControlPlane, control_dir: Path, tmp_path: Path
) -> None:
    """`POST /api/v2/device/{id}/authorized` and `POST /api/v2/device/{id}/key` of the Tailscale API v2."""
    import urllib.request

    from tailnix_lab.emulator.api import TailscaleApi

    control.set_device_approval(True)
    host.start_and_settle()
    host.tailscale(
        "up", f"--auth-key={key_file(tmp_path, control.mint_key(preauthorized=False))}", "--timeout=0.1s"
    )
    node_id = node_id_of(host)
    with TailscaleApi(control_dir) as api:
        client_id, secret = api.add_client()
        token = api.issue_token(client_id)

        def post(path: str, body: dict[str, object]) -> int:
            request = urllib.request.Request(
                api.url + path,
                data=json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request) as answer:
                return int(answer.status)

        assert post(f"/api/v2/device/{node_id}/authorized", {"authorized": True}) == 200
        assert host.status()["BackendState"] == "Running"
        assert "KeyExpiry" in self_of(host.status())
        assert post(f"/api/v2/device/{node_id}/key", {"keyExpiryDisabled": True}) == 200
    assert "KeyExpiry" not in self_of(host.status())
    control.age_node_keys(days=365)
    assert host.status()["BackendState"] == "Running"


def test_an_expired_node_key_needs_a_new_login(
    running_host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    """Node keys expire after 180 days; an expired node is NeedsLogin; a key logs it in again.

    Source: tailscale v1.90.6 `ipn/ipnlocal/local.go`, `nextStateLocked` (`keyExpired` -> NeedsLogin);
    `control/controlclient/direct.go` (`resp.NodeKeyExpired` -> a new node key, a new registration);
    `ipn/ipnstate/ipnstate.go` (`PeerStatus.KeyExpiry`, omitted when expiry is disabled).
    """
    from datetime import UTC, datetime

    expiry = self_of(running_host.status())["KeyExpiry"]
    assert isinstance(expiry, str)
    days = (datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) - datetime.now(UTC)).days
    assert days in (179, 180)

    control.age_node_keys(days=181)
    assert running_host.status()["BackendState"] == "NeedsLogin"
    key = key_file(tmp_path, control.mint_key())
    again = running_host.tailscale("up", f"--auth-key={key}")
    assert again.returncode == 0, again.stderr
    assert running_host.status()["BackendState"] == "Running"
    assert len(control.logins()) == 2


def test_a_node_without_a_path_to_peers_or_derp_stays_starting(
    make_host: Callable[[str], Host], control: ControlPlane, tmp_path: Path
) -> None:
    """Logged in but with no live peer and no DERP: `Starting`, and `up` waits for Running.

    Source: tailscale v1.90.6 `ipn/ipnlocal/local.go`, `nextStateLocked`: from Starting to Running only
    when `engineStatus.NumLive > 0 || LiveDERPs > 0`; `cmd/tailscale/cli/up.go`: `justEdit` needs
    Running, so in Starting `up` goes down the start path and waits ("timeout waiting for Tailscale
    service to enter a Running state"); `cmd/tailscale/cli/status.go` lists the node in Starting (exit 0).
    """
    control.set_derp_reachable(False)
    key = key_file(tmp_path, control.mint_key())
    alone = make_host("alpha")
    alone.start_and_settle()
    joined = alone.tailscale("up", f"--auth-key={key}", "--timeout=0.3s")
    assert joined.returncode == 1
    assert "timeout waiting for Tailscale service to enter a Running state" in joined.stderr
    status = alone.status()
    assert status["BackendState"] == "Starting"
    assert self_of(status)["Online"] is False
    assert alone.tailscale("status").returncode == 0
    # Not Running, so not a mere edit of prefs: `up` with the same flags waits too.
    again = alone.tailscale("up", "--timeout=0.3s")
    assert again.returncode == 1
    assert "timeout waiting for Tailscale service to enter a Running state" in again.stderr

    control.set_derp_reachable(True)
    assert alone.status()["BackendState"] == "Running"
    assert alone.tailscale("up").returncode == 0


NO_RELAY_CONNECTION = (
    "Tailscale could not connect to the 'Lab' relay server. Your Internet connection might be down, "
    "or the server might be temporarily unavailable."
)
NO_HOME_RELAY = "Tailscale could not connect to any relay server. Check your Internet connection."
WARMING_UP = "Tailscale is starting. Please wait."


def test_a_running_node_that_loses_its_path_stays_running_with_a_health_warning(
    running_host: Host, control: ControlPlane
) -> None:
    """Once Running, a node stays Running when its path goes; a health warning says what is wrong.

    Source: tailscale v1.90.6 `ipn/ipnlocal/local.go`, `nextStateLocked` (`state == ipn.Running` stays
    Running; only Starting looks at `NumLive`/`LiveDERPs`) and `Status` (`s.Health = b.health.Strings()`);
    `health/health.go`, `updateBuiltinWarnablesLocked` (a home DERP region not connected:
    `noDERPConnectionWarnable`; nothing in the 5 s after the node is turned on, `recentlyOn`),
    `health/warnings.go` (its text, `TimeToVisible: 10 * time.Second`).
    """
    control.set_derp_reachable(False)
    status = running_host.status()
    assert status["BackendState"] == "Running"
    assert status["Health"] == []
    assert self_of(status)["Online"] is True

    # Visible 10 s after it became unhealthy, which is never before 5 s after the node was turned on.
    control.let_time_pass(14)
    assert running_host.status()["Health"] == []
    control.let_time_pass(1.5)
    status = running_host.status()
    assert (status["BackendState"], status["Health"]) == ("Running", [NO_RELAY_CONNECTION])
    plain = running_host.tailscale("status")
    assert plain.returncode == 0
    # After the nodes, as `runStatus` (`cmd/tailscale/cli/status.go`) prints them.
    node_line, blank, *health = plain.stdout.splitlines()
    assert node_line.startswith("100.64.0.1 ") and blank == ""
    assert health == ["# Health check:", f"#     - {NO_RELAY_CONNECTION}"]
    # Still Running, so `up` with the node's own flags only edits prefs and returns at once.
    assert running_host.tailscale("up", "--timeout=0.3s").returncode == 0

    control.set_derp_reachable(True)
    assert (running_host.status()["BackendState"], running_host.status()["Health"]) == ("Running", [])


def test_a_node_that_stops_needs_a_path_again_to_be_running(
    running_host: Host, control: ControlPlane
) -> None:
    """Running is kept only while the node stays up: after `down`, `up` starts over in Starting.

    Source: tailscale v1.90.6 `ipn/ipnlocal/local.go`, `nextStateLocked` (`!wantRunning` -> Stopped;
    from Stopped, Starting; Starting -> Running only with `NumLive > 0 || LiveDERPs > 0`);
    `health/health.go` (`SetIPNState`: turned on again, `warmingUpWarnable` for 5 s until Running; then no
    home DERP region at all: `noDERPHomeWarnable`), `health/warnings.go`.
    """
    control.set_derp_reachable(False)
    control.let_time_pass(60)
    assert running_host.status()["BackendState"] == "Running"
    assert running_host.tailscale("down").returncode == 0
    assert running_host.status()["BackendState"] == "Stopped"
    again = running_host.tailscale("up", "--timeout=0.3s")
    assert again.returncode == 1
    assert "timeout waiting for Tailscale service to enter a Running state" in again.stderr
    status = running_host.status()
    assert (status["BackendState"], status["Health"]) == ("Starting", [WARMING_UP])
    control.let_time_pass(16)
    status = running_host.status()
    assert (status["BackendState"], status["Health"]) == ("Starting", [NO_HOME_RELAY])

    control.set_derp_reachable(True)
    assert running_host.status()["BackendState"] == "Running"


def test_a_host_cut_off_from_derp_and_peers_stays_starting_while_others_run(
    make_host: Callable[[str], Host], control: ControlPlane, tmp_path: Path
) -> None:
    """A host whose network lets it reach control only (a firewall that drops UDP and the relays):
    logged in, no live peer, no DERP, so Starting, with the relay warning once it is 10 s old.

    Source: tailscale v1.90.6 `ipn/ipnlocal/local.go` (`nextStateLocked`: Starting until `NumLive > 0 ||
    LiveDERPs > 0`); `health/health.go` (`noDERPHomeWarnable`: no home region found).
    """
    key = key_file(tmp_path, control.mint_key(reusable=True))
    other = make_host("other")
    other.start_and_settle()
    assert other.tailscale("up", f"--auth-key={key}").returncode == 0
    control.set_path_blocked("alpha", True)
    alone = make_host("alpha")
    alone.start_and_settle()
    joined = alone.tailscale("up", f"--auth-key={key}", "--timeout=0.3s")
    assert joined.returncode == 1
    assert alone.status()["Health"] == [WARMING_UP]
    control.let_time_pass(16)
    status = alone.status()
    assert (status["BackendState"], status["Health"]) == ("Starting", [NO_HOME_RELAY])
    assert other.status()["BackendState"] == "Running"

    control.set_path_blocked("alpha", False)
    assert (alone.status()["BackendState"], alone.status()["Health"]) == ("Running", [])


def test_logout_then_up_with_a_key_logs_in_again(
    running_host: Host, control: ControlPlane, tmp_path: Path
) -> None:
    """Source: tailscale v1.90.6 `ipn/ipnlocal/local.go` (`Logout`: the node key is expired at control
    and the prefs say LoggedOut) and `cmd/tailscale/cli/up.go` (`!st.HaveNodeKey` -> a new login)."""
    assert running_host.tailscale("logout").returncode == 0
    assert running_host.status()["BackendState"] == "NeedsLogin"
    (node,) = control.nodes()
    assert node["LoggedOut"] is True

    spent = control.mint_key()
    control.revoke_key(spent)
    refused = running_host.tailscale("up", f"--auth-key={key_file(tmp_path, spent)}")
    assert refused.returncode == 1
    assert running_host.status()["BackendState"] == "NeedsLogin"

    result = running_host.tailscale("up", f"--auth-key={key_file(tmp_path, control.mint_key())}")
    assert result.returncode == 0, result.stderr
    assert running_host.status()["BackendState"] == "Running"
    assert len(control.logins()) == 2
    assert [n["LoggedOut"] for n in control.nodes()] == [False]
