"""The lab's hosts as a user of `tailnix lab` sees them: over real SSH, through pyinfra, on disk."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tailnix.agekey import ssh_private_key_to_age_identity
from tailnix.sops import decrypt_value, read_metadata
from tailnix_lab import hosts as hosts_module
from tailnix_lab import stock
from tailnix_lab.cli import lab as lab_command
from tailnix_lab.demo import render_sops_config
from tailnix_lab.hosts import (
    Lab,
    LabCommandError,
    LabError,
    LabHost,
    lab_mounts,
    processes_in_namespace,
)

pytestmark = pytest.mark.lab

PYINFRA = [sys.executable, "-m", "pyinfra"]


SESSION_HOSTS = ("nixos-1", "nixos-2", "nixos-3", "debian-1")
"""The hosts of the session's lab; other tests add (and stop) hosts of their own."""


def session_hosts(lab: Lab) -> list[LabHost]:
    return [lab.host(name) for name in SESSION_HOSTS]


def nixos_hosts(lab: Lab) -> list[LabHost]:
    return [host for host in session_hosts(lab) if host.os == "nixos"]


def running_processes(namespace: str) -> list[int]:
    """Pids in the namespace that are not zombies (a zombie holds no mount and no port)."""
    alive = []
    for pid in processes_in_namespace(namespace):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def test_every_host_answers_over_ssh_under_its_own_name(lab: Lab) -> None:
    for host in session_hosts(lab):
        result = lab.ssh(host.name, "hostname; cat /etc/hostname; id -un")
        assert result.stdout.split() == [host.name, host.name, "root"]


def test_nixos_hosts_have_their_own_stock_configuration(lab: Lab) -> None:
    for host in nixos_hosts(lab):
        configuration = lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
        assert f'networking.hostName = "{host.name}";' in configuration
        assert 'system.stateVersion = "25.11";' in configuration
        hardware = lab.ssh(host.name, "cat /etc/nixos/hardware-configuration.nix").stdout
        assert "nixos-generate-config" in hardware
        # The real Nix parser accepts both files, on the host itself.
        lab.ssh(
            host.name,
            "nix-instantiate --store dummy:// --parse /etc/nixos/configuration.nix >/dev/null && "
            "nix-instantiate --store dummy:// --parse /etc/nixos/hardware-configuration.nix",
        )


def test_admin_key_in_configuration_is_the_lab_key(lab: Lab) -> None:
    admin_key = " ".join(lab.layout.ssh_key.with_suffix(".pub").read_text().split()[:2])
    configuration = lab.ssh("nixos-1", "cat /etc/nixos/configuration.nix").stdout
    assert f'"{admin_key}"' in configuration


def test_os_release_and_nixos_version(lab: Lab) -> None:
    release = lab.ssh("nixos-1", ". /etc/os-release; echo $ID $VERSION_ID").stdout.split()
    assert release == ["nixos", "25.11"]
    assert lab.ssh("nixos-1", "nixos-version").stdout == "25.11.20251120.abcdef0 (Xantusia)\n"
    assert lab.ssh("nixos-1", "nixos-version --revision").stdout.strip() == stock.NIXPKGS_REVISION

    assert lab.ssh("debian-1", ". /etc/os-release; echo $ID").stdout.strip() == "debian"
    missing = lab.ssh("debian-1", "command -v nixos-rebuild", check=False)
    assert missing.returncode != 0


def test_nixos_hosts_carry_the_emulated_commands(lab: Lab) -> None:
    listing = lab.ssh("nixos-2", "ls /usr/local/sbin; command -v nixos-rebuild").stdout.split()
    assert listing == [
        "journalctl",
        "nixos-rebuild",
        "nixos-version",
        "systemctl",
        "systemd-run",
        "tailscale",
        "/usr/local/sbin/nixos-rebuild",
    ]


def test_each_host_key_is_its_own_and_the_one_in_known_hosts(lab: Lab) -> None:
    known_hosts = lab.layout.known_hosts.read_text().splitlines()
    keys = set()
    for host in session_hosts(lab):
        on_host = lab.ssh(host.name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
        assert " ".join(on_host[:2]) == host.host_key_public
        assert f"[127.0.0.1]:{host.port} {host.host_key_public}" in known_hosts
        keys.add(host.host_key_public)
        # Only its own key: the machine's other host keys do not show through.
        assert lab.ssh(host.name, "ls /etc/ssh/ | grep ^ssh_host_").stdout.split() == [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
        ]
    assert len({host.host_key_public for host in lab.hosts}) == len(lab.hosts)
    assert len(keys) == len(SESSION_HOSTS)


def test_ssh_refuses_a_host_whose_key_does_not_match(lab: Lab, tmp_path: Path) -> None:
    first, second = lab.host("nixos-1"), lab.host("nixos-2")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{first.port} {second.host_key_public}\n")
    argv = [arg.replace(str(lab.layout.known_hosts), str(wrong)) for arg in lab.ssh_command("nixos-1")]
    result = subprocess.run([*argv, "true"], capture_output=True, text=True, check=False)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_a_failing_command_reports_its_output(lab: Lab) -> None:
    with pytest.raises(LabCommandError) as raised:
        lab.ssh("nixos-1", "echo to-stdout; echo to-stderr >&2; exit 3")
    assert raised.value.returncode == 3
    assert "to-stderr" in str(raised.value)
    assert lab.ssh("nixos-1", "exit 3", check=False).returncode == 3


def test_ssh_passes_input(lab: Lab) -> None:
    assert lab.ssh("nixos-3", "tr a-z A-Z", input="hello\n").stdout == "HELLO\n"


def test_writes_in_etc_stay_on_their_host(lab: Lab, clean_nixos_host: LabHost) -> None:
    name = clean_nixos_host.name
    lab.ssh(
        name,
        "echo changed > /etc/tailnix-test-marker; echo x > /etc/nixos/extra.nix; "
        "echo t > /tmp/marker; echo r > /root/marker; mkdir -p /var/lib/marker",
    )
    assert lab.ssh(name, "cat /etc/tailnix-test-marker").stdout == "changed\n"
    probe = "ls /etc/tailnix-test-marker /etc/nixos/extra.nix /tmp/marker /root/marker /var/lib/marker"
    for other in ("nixos-1", "debian-1"):
        assert lab.ssh(other, probe + " 2>/dev/null; true").stdout == ""
    # Nor on the machine that runs the lab.
    assert not Path("/etc/tailnix-test-marker").exists()
    assert not Path("/var/lib/marker").exists()


def test_each_host_has_its_own_run_with_the_shared_lab_state(lab: Lab, clean_nixos_host: LabHost) -> None:
    lab.ssh(clean_nixos_host.name, "mkdir -p /run/tailnix-test-marker")
    assert lab.ssh("nixos-2", "test -e /run/tailnix-test-marker", check=False).returncode == 1
    shared = lab.ssh("nixos-2", "ls /run/tailnix-lab").stdout.split()
    assert {"bin", "control", "hosts.json", "pylib", "sops-nix-standin.tar.gz"} <= set(shared)
    assert lab.ssh("nixos-2", "/run/tailnix-lab/bin/sops --version --disable-version-check").stdout


def test_an_added_host_is_reachable_but_not_a_recipient(lab: Lab, clean_nixos_host: LabHost) -> None:
    assert lab.ssh(clean_nixos_host.name, "hostname").stdout.strip() == clean_nixos_host.name
    assert clean_nixos_host.name not in lab.layout.sops_config.read_text()
    assert clean_nixos_host.name not in lab.layout.inventory.read_text()
    assert Lab.open(lab.directory).host(clean_nixos_host.name).port == clean_nixos_host.port


def test_pyinfra_reaches_every_host_through_the_inventory(lab: Lab) -> None:
    result = subprocess.run(
        [*PYINFRA, "-y", str(lab.layout.inventory), "exec", "--", "uname", "-n"],
        capture_output=True,
        text=True,
        check=False,
        cwd=lab.directory,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    for host in session_hosts(lab):
        assert f"[{host.name}] {host.name}" in " ".join(output.split())


def test_written_inventory_holds_the_chosen_hosts_and_their_data(lab: Lab, tmp_path: Path) -> None:
    inventory = lab.write_inventory(
        tmp_path / "inventory.py",
        hosts=["nixos-2"],
        host_data={"nixos-2": {"tailscale_extra_up_flags": ["--ssh"]}},
        secrets_file=tmp_path / "other.yaml",
    )
    result = subprocess.run(
        [*PYINFRA, str(inventory), "debug-inventory"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "[nixos-2]" in output
    assert "[nixos-1]" not in output
    assert '"tailscale_extra_up_flags": [\n        "--ssh"\n    ]' in output
    assert f'"tailnix_secrets_file": "{tmp_path / "other.yaml"}"' in output
    assert f'"ssh_port": {lab.host("nixos-2").port}' in output


def test_demo_secrets_are_readable_by_the_admin_and_every_nixos_host(lab: Lab) -> None:
    rules = yaml.safe_load(lab.layout.sops_config.read_text())["creation_rules"]
    assert len(rules) == 1
    assert rules[0]["path_regex"] == r"secrets/tailscale\.yaml$"
    (group,) = rules[0]["key_groups"]
    metadata = read_metadata(lab.layout.secrets_file)
    assert sorted(metadata.recipients) == sorted(group["age"])
    assert len(group["age"]) == 1 + 3  # the admin and nixos-1..3, not debian-1

    secret = decrypt_value(
        lab.layout.secrets_file, "tailscale_auth_key", age_key_file=lab.layout.admin_agekey
    )
    assert secret.startswith("TAILSCALE_AUTH_KEY=tskey-auth-")

    host_key = lab.ssh("nixos-3", "cat /etc/ssh/ssh_host_ed25519_key").stdout
    identity = lab.directory / "test-nixos-3.agekey"
    identity.write_text(ssh_private_key_to_age_identity(host_key) + "\n")
    try:
        as_host = decrypt_value(lab.layout.secrets_file, "tailscale_auth_key", age_key_file=identity)
    finally:
        identity.unlink()
    assert as_host == secret


def test_sops_config_names_recipients_with_anchors() -> None:
    text = render_sops_config({"admin": "age1admin", "nixos-1": "age1one"})
    assert "  - &admin age1admin\n" in text
    assert "          - *nixos-1\n" in text
    parsed = yaml.safe_load(text)
    assert parsed["creation_rules"][0]["key_groups"] == [{"age": ["age1admin", "age1one"]}]


def test_sops_nix_pin_evaluates_on_a_host(lab: Lab) -> None:
    sha256 = lab.layout.standin_sha256.read_text().strip()
    expression = (
        'builtins.pathExists "${builtins.fetchTarball { '
        f'url = "file:///run/tailnix-lab/sops-nix-standin.tar.gz"; sha256 = "{sha256}"; '
        '}}/modules/sops/default.nix"'
    )
    result = lab.ssh("nixos-1", f"nix-instantiate --eval -E '{expression}'")
    assert result.stdout.strip() == "true"


def test_status_lists_every_host(lab: Lab) -> None:
    result = CliRunner().invoke(lab_command, ["status", "--dir", str(lab.directory)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "OS", "PORT", "PID", "STATE"]
    for host in session_hosts(lab):
        assert f"{host.name}\t{host.os}\t{host.port}\t{host.pid}\trunning" in lines


def test_lab_ssh_command_returns_the_remote_exit_code(lab: Lab) -> None:
    tailnix = Path(sys.executable).parent / "tailnix"
    result = subprocess.run(
        [
            str(tailnix),
            "lab",
            "ssh",
            "nixos-1",
            "--dir",
            str(lab.directory),
            "--",
            "cat",
            "/etc/hostname",
            ";",
            "exit",
            "7",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 7
    assert result.stdout == "nixos-1\n"


def test_lab_down_leaves_no_process_and_no_mount(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    runner = CliRunner()
    started = runner.invoke(lab_command, ["up", "2", "--dir", str(directory)])
    assert started.exit_code == 0, started.output
    assert "nixos-2" in started.output

    again = runner.invoke(lab_command, ["up", "1", "--dir", str(directory)])
    assert again.exit_code == 1
    assert "already running" in again.output

    running = Lab.open(directory)
    # A session that outlives its connection still holds the host's namespace.
    running.ssh("nixos-1", "setsid sleep 300 </dev/null >/dev/null 2>&1 &")
    namespaces = [host.mount_namespace for host in running.hosts]
    assert all(running_processes(namespace) for namespace in namespaces)

    stopped = runner.invoke(lab_command, ["down", "--dir", str(directory)])
    assert stopped.exit_code == 0, stopped.output
    for namespace in namespaces:
        assert running_processes(namespace) == []
    assert lab_mounts(directory) == []
    assert all(str(directory) not in line for line in Path("/proc/mounts").read_text().splitlines())
    status = runner.invoke(lab_command, ["status", "--dir", str(directory)])
    assert status.output.count("\tstopped") == 2
    with pytest.raises(LabCommandError):
        running.ssh("nixos-1", "true")

    # A stopped lab starts again from nothing in the same directory.
    restarted = Lab.up(directory, 1)
    try:
        assert restarted.ssh("nixos-1", "hostname").stdout == "nixos-1\n"
        assert [host.name for host in restarted.hosts] == ["nixos-1"]
    finally:
        restarted.down()


def test_lab_up_refuses_a_directory_that_is_not_a_lab(tmp_path: Path) -> None:
    (tmp_path / "inventory.py").write_text("fleet = []\n")
    with pytest.raises(LabError, match="not empty and holds no lab"):
        Lab.up(tmp_path, 1)
    assert (tmp_path / "inventory.py").read_text() == "fleet = []\n"


def test_opening_a_directory_without_a_lab_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no lab in .*tailnix lab up"):
        Lab.open(tmp_path)


def test_a_host_that_cannot_start_fails_with_sshd_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosts_module, "sshd_config", lambda name, port: f"Port {port}\nNoSuchOption yes\n")
    with pytest.raises(LabError, match="(?s)nixos-1: sshd exited .*NoSuchOption") as raised:
        Lab.up(tmp_path / "lab", 1)
    assert "Bad configuration option" in str(raised.value)
    for host in Lab.open(tmp_path / "lab").hosts:
        assert running_processes(host.mount_namespace) == []
    assert lab_mounts(tmp_path / "lab") == []


def test_stock_configuration_evaluates_with_the_lab_module_system(
    lab: Lab, clean_nixos_host: LabHost
) -> None:
    evaluator = "/run/tailnix-lab/pylib/tailnix_lab/emulator/eval.nix"
    result = lab.ssh(
        clean_nixos_host.name,
        f"nix-instantiate --store dummy:// --eval --strict --json {evaluator} "
        "--argstr configurationFile /etc/nixos/configuration.nix",
    )
    config = json.loads(result.stdout)["config"]
    assert config["networking"]["hostName"] == clean_nixos_host.name
    assert config["services"]["openssh"]["enable"] is True
    assert config["system"]["stateVersion"] == "25.11"
    assert config["fileSystems"]["/"]["fsType"] == "ext4"


def test_a_host_whose_hostname_changed_still_stops(lab: Lab) -> None:
    """A host is its sshd's namespace, whatever its hostname: a test (or a switch, on real NixOS, from
    `networking.hostName`) may rename it, and stopping it must still end every process it has."""
    renamed = lab.add_host(os="nixos")
    namespace = renamed.mount_namespace
    lab.ssh(renamed.name, "echo mailbox > /etc/hostname")
    try:
        lab.stop_host(renamed.name)
        assert running_processes(namespace) == []
    finally:
        # Leave nothing behind, whatever the outcome: the processes that still have this host's key.
        for pid in running_processes(namespace):
            key = Path(f"/proc/{pid}/root/etc/ssh/ssh_host_ed25519_key.pub")
            with contextlib.suppress(OSError):
                if key.read_text().split()[:2] == renamed.host_key_public.split()[:2]:
                    os.kill(pid, signal.SIGKILL)
