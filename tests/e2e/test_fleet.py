"""The fleet commands end to end: `tailnix bootstrap/forget/rotate-key/check/deploy/status` over real SSH.

The tests share two fresh lab hosts (fleet-a and fleet-b are the first two added; a third joins later) and
one fleet directory with its own `.sops.yaml` and secrets file; they run in the order of a fleet's life.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tailnix.agekey import ssh_private_key_to_age_identity, ssh_public_key_to_age
from tailnix.runner import default_deploy_file, pyinfra_argv
from tailnix.sops import SopsError, decrypt_value, encrypt_values, read_metadata, sops_binary, update_keys
from tailnix_lab.demo import render_sops_config
from tailnix_lab.emulator.api import TailscaleApi
from tailnix_lab.emulator.control import ControlPlane, parse_auth_key
from tailnix_lab.hosts import Lab, LabHost

from .deploying import SUDO_USER

pytestmark = pytest.mark.lab

TAILNIX = Path(sys.executable).parent / "tailnix"
COMMENT = "# Fleet secrets: keep this comment.\n"


@dataclass
class Fleet:
    """A fleet directory: inventory, .sops.yaml, secrets file, and the lab hosts in it."""

    lab: Lab
    directory: Path
    hosts: list[LabHost]
    first_key: str

    @property
    def inventory(self) -> Path:
        return self.directory / "inventory.py"

    @property
    def sops_config(self) -> Path:
        return self.directory / ".sops.yaml"

    @property
    def secrets(self) -> Path:
        return self.directory / "secrets" / "tailscale.yaml"

    @property
    def sops_argv_log(self) -> Path:
        return self.directory / "sops-argv.log"

    def write_inventory(self, **host_data: dict[str, object]) -> None:
        self.lab.write_inventory(
            self.inventory,
            hosts=[h.name for h in self.hosts],
            host_data=host_data,
            secrets_file=self.secrets,
        )

    def tailnix(
        self, *arguments: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            **(env or {}),
            "SOPS_AGE_KEY_FILE": str(self.lab.layout.admin_agekey),
            # Every sops call goes through a wrapper that logs its arguments: the tests read them.
            "TAILNIX_SOPS": str(self.directory / "sops"),
        }
        return subprocess.run(
            [str(TAILNIX), *arguments],
            cwd=self.directory,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    def pyinfra_dry(self) -> subprocess.CompletedProcess[str]:
        """pyinfra's own dry run of the fleet's deploy, in the fleet's directory: its plan, nothing changed."""
        return subprocess.run(
            [*pyinfra_argv(self.inventory, "--dry"), str(default_deploy_file(self.directory))],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "SOPS_AGE_KEY_FILE": str(self.lab.layout.admin_agekey)},
        )

    def recipient(self, host: LabHost) -> str:
        return ssh_public_key_to_age(host.host_key_public)


def write_sops_wrapper(directory: Path) -> None:
    """`directory/sops`: the real sops, each call's arguments logged to `directory/sops-argv.log`."""
    wrapper = directory / "sops"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {directory}/sops-argv.log\nexec {sops_binary()} "$@"\n')
    wrapper.chmod(0o755)


def new_fleet(lab: Lab, directory: Path, hosts: list[LabHost], first_key: str, *, comment: str = "") -> Fleet:
    """A fleet directory: a logging sops wrapper, `.sops.yaml` for the admin only, the key encrypted."""
    write_sops_wrapper(directory)
    admin = subprocess.run(
        ["age-keygen", "-y", str(lab.layout.admin_agekey)], capture_output=True, text=True, check=True
    ).stdout.strip()
    (directory / ".sops.yaml").write_text(comment + render_sops_config({"admin": admin}))
    encrypt_values(
        {"tailscale_auth_key": first_key},
        target=directory / "secrets" / "tailscale.yaml",
        config=directory / ".sops.yaml",
        age_key_file=lab.layout.admin_agekey,
    )
    return Fleet(lab, directory, hosts, first_key)


def bootstrapped_fleet(lab: Lab, directory: Path) -> Fleet:
    """One fresh host, bootstrapped with a reusable key and default settings: Running."""
    hosts = [lab.add_host(os="nixos")]
    key = ControlPlane(lab.layout.control).mint_key(reusable=True)
    created = new_fleet(lab, directory, hosts, key)
    created.write_inventory()
    bootstrapped = created.tailnix("bootstrap", hosts[0].name, "-i", "inventory.py")
    assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
    return created


def backend_state(lab: Lab, host: str) -> str:
    return str(json.loads(lab.ssh(host, "tailscale status --json --peers=false").stdout)["BackendState"])


def logins_of(lab: Lab, hostname: str) -> list[dict[str, object]]:
    return [entry for entry in ControlPlane(lab.layout.control).logins() if entry["hostname"] == hostname]


def group_of(config: Path) -> list[str]:
    groups = yaml.safe_load(config.read_text())["creation_rules"][0]["key_groups"]
    assert len(groups) == 1
    return list(groups[0]["age"])


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two fresh hosts the secrets file does not know yet; .sops.yaml lists the admin only.

    The first is reached as root, the second as a non-root admin with sudo (`_sudo: True`): every
    command goes through both ways of logging in.
    """
    directory = tmp_path_factory.mktemp("fleet")
    hosts = [lab.add_host(os="nixos"), lab.add_host(os="nixos", sudo_user=SUDO_USER)]
    first_key = ControlPlane(lab.layout.control).mint_key(reusable=True)
    created = new_fleet(lab, directory, hosts, first_key, comment=COMMENT)
    created.write_inventory()
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


@pytest.fixture(scope="module")
def bootstrapped(fleet: Fleet) -> subprocess.CompletedProcess[str]:
    return fleet.tailnix("bootstrap", *(h.name for h in fleet.hosts), "-i", "inventory.py")


def test_bootstrap_records_the_hosts_and_brings_them_to_running(
    fleet: Fleet, bootstrapped: subprocess.CompletedProcess[str]
) -> None:
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    text = fleet.sops_config.read_text()
    assert text.startswith(COMMENT + "# Who can read the lab's secrets")
    for host in fleet.hosts:
        assert f"  - &{host.name} {fleet.recipient(host)}\n" in text
        assert f"          - *{host.name}\n" in text
        assert f"{host.name}: recipient added" in bootstrapped.stdout
        assert fleet.recipient(host) in read_metadata(fleet.secrets).recipients
        assert backend_state(fleet.lab, host.name) == "Running"
    assert group_of(fleet.sops_config)[1:] == [fleet.recipient(h) for h in fleet.hosts]
    assert "HOST" in bootstrapped.stdout and "2 hosts deployed: 2 ok, 0 failed" in bootstrapped.stdout
    # Every host of the inventory got the re-encrypted file: nothing is left for a later deploy.
    assert "note:" not in bootstrapped.stdout


def test_bootstrap_again_changes_nothing(
    fleet: Fleet, bootstrapped: subprocess.CompletedProcess[str]
) -> None:
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    before = (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes())
    again = fleet.tailnix("bootstrap", *(h.name for h in fleet.hosts), "-i", "inventory.py")
    assert again.returncode == 0, again.stderr
    assert (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes()) == before
    assert "nothing to change" in again.stdout
    for host in fleet.hosts:
        assert f"{host.name}: already a recipient" in again.stdout
        assert f"{host.name}: ok, -," in again.stdout  # deployed, not switched


def test_bootstrap_quiet_prints_only_the_summary_line(
    fleet: Fleet, bootstrapped: subprocess.CompletedProcess[str]
) -> None:
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    quiet = fleet.tailnix("bootstrap", "--quiet", *(h.name for h in fleet.hosts), "-i", "inventory.py")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "2 hosts deployed: 2 ok, 0 failed\n"
    assert quiet.stderr == ""


def test_a_changed_host_key_is_refused_without_replace_key(
    fleet: Fleet, bootstrapped: subprocess.CompletedProcess[str]
) -> None:
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    host = fleet.hosts[1]
    other = ssh_public_key_to_age(fleet.lab.host("nixos-1").host_key_public)
    fleet.sops_config.write_text(
        fleet.sops_config.read_text().replace(
            f"&{host.name} {fleet.recipient(host)}", f"&{host.name} {other}"
        )
    )
    update_keys(fleet.secrets, config=fleet.sops_config, age_key_file=fleet.lab.layout.admin_agekey)
    before = (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes())

    refused = fleet.tailnix("bootstrap", host.name, "-i", "inventory.py", "--no-deploy")
    assert refused.returncode == 1
    assert f"{host.name}: error: its SSH host key changed" in refused.stderr
    assert "--replace-key" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes()) == before

    replaced = fleet.tailnix("bootstrap", host.name, "-i", "inventory.py", "--no-deploy", "--replace-key")
    assert replaced.returncode == 0, replaced.stderr
    assert f"{host.name}: recipient replaced" in replaced.stdout
    names = ", ".join(h.name for h in fleet.hosts)
    assert f"note: the secrets file was re-encrypted; {names} have the old copy until `tailnix deploy`" in (
        replaced.stdout
    )
    assert group_of(fleet.sops_config)[1:] == [fleet.recipient(h) for h in fleet.hosts]
    assert set(read_metadata(fleet.secrets).recipients) == set(group_of(fleet.sops_config))


def test_an_unreachable_host_fails_clearly_and_changes_nothing(
    fleet: Fleet, lab: Lab, bootstrapped: subprocess.CompletedProcess[str]
) -> None:
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    unreachable = lab.add_host(os="nixos")
    lab.stop_host(unreachable.name)
    inventory = fleet.directory / "with-unreachable.py"
    lab.write_inventory(inventory, hosts=[unreachable.name], secrets_file=fleet.secrets)
    before = (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes())
    result = fleet.tailnix("bootstrap", unreachable.name, "-i", inventory.name)
    assert result.returncode == 1
    assert f"{unreachable.name}: error: cannot read its host key: Could not connect" in result.stderr
    assert "Traceback" not in result.stderr
    assert (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes()) == before


def test_a_host_that_is_not_nixos_is_not_recorded(
    fleet: Fleet, lab: Lab, bootstrapped: subprocess.CompletedProcess[str]
) -> None:
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    inventory = fleet.directory / "with-debian.py"
    lab.write_inventory(inventory, hosts=["debian-1"], secrets_file=fleet.secrets)
    before = (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes())
    result = fleet.tailnix("bootstrap", "debian-1", "-i", inventory.name)
    assert result.returncode == 1
    assert "debian-1: error: debian-1 is not NixOS (os-release ID=debian)" in result.stderr
    assert (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes()) == before


@pytest.fixture(scope="module")
def rotated(fleet: Fleet, bootstrapped: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """Rotate to a new key of the lab's control plane; returns the new key and the command's output."""
    assert bootstrapped.returncode == 0, bootstrapped.stderr
    new_key = ControlPlane(fleet.lab.layout.control).mint_key(reusable=True, expiry_days=90)
    result = fleet.tailnix("rotate-key", "-i", "inventory.py", "--days", "90", stdin=new_key + "\n")
    assert result.returncode == 0, result.stderr
    return new_key, result.stdout + result.stderr


def test_rotate_key_keeps_running_hosts_logged_in(fleet: Fleet, rotated: tuple[str, str]) -> None:
    new_key, output = rotated
    assert (
        decrypt_value(fleet.secrets, "tailscale_auth_key", age_key_file=fleet.lab.layout.admin_agekey)
        == new_key
    )
    unencrypted = read_metadata(fleet.secrets).unencrypted
    assert set(unencrypted) == {
        "tailscale_auth_key_set_unencrypted",
        "tailscale_auth_key_expires_unencrypted",
    }
    for host in fleet.hosts:
        assert backend_state(fleet.lab, host.name) == "Running"
        logins = logins_of(fleet.lab, host.name)
        # One login, with the first key: the rotation restarted the unit but did not log in again.
        assert [entry["key_id"] for entry in logins] == [parse_auth_key(fleet.first_key).key_id]  # type: ignore[union-attr]
        assert f"{host.name}: ok, switched" in output


def test_the_new_key_is_in_no_argv_log_or_plaintext_file(fleet: Fleet, rotated: tuple[str, str]) -> None:
    new_key, output = rotated
    secret_part = new_key.rsplit("-", 1)[1]
    assert secret_part not in output
    assert "--value-stdin" in fleet.sops_argv_log.read_text()
    assert secret_part not in fleet.sops_argv_log.read_text()
    for path in fleet.directory.rglob("*"):
        if path.is_file():
            assert secret_part not in path.read_text(errors="replace"), path
    assert stat.S_IMODE(fleet.secrets.stat().st_mode) == 0o600
    host = fleet.hosts[0].name
    logs = fleet.lab.ssh(
        host, "cat /var/log/tailnix-lab/tailscale-argv.jsonl /var/log/tailnix-lab/journal/*.log"
    )
    assert secret_part not in logs.stdout
    history = fleet.lab.ssh(host, "cat /root/.bash_history 2>/dev/null; true").stdout
    assert secret_part not in history


def test_a_fresh_host_joins_with_the_new_key(fleet: Fleet, lab: Lab, rotated: tuple[str, str]) -> None:
    new_key, _output = rotated
    fresh = lab.add_host(os="nixos")
    fleet.hosts.append(fresh)
    fleet.write_inventory()
    result = fleet.tailnix("bootstrap", fresh.name, "-i", "inventory.py")
    assert result.returncode == 0, result.stderr
    others = ", ".join(h.name for h in fleet.hosts[:-1])
    assert f"note: the secrets file was re-encrypted; {others} have the old copy until `tailnix deploy`" in (
        result.stdout
    )
    assert backend_state(lab, fresh.name) == "Running"
    assert [entry["key_id"] for entry in logins_of(lab, fresh.name)] == [parse_auth_key(new_key).key_id]  # type: ignore[union-attr]


def test_deploy_in_batches_prints_a_line_per_host_and_a_summary(
    fleet: Fleet, rotated: tuple[str, str]
) -> None:
    result = fleet.tailnix("deploy", "-i", "inventory.py", "--batch", "2")
    assert result.returncode == 0, result.stderr
    total = len(fleet.hosts)
    for number in range(1, total + 1):
        assert f"[{number}/{total}] " in result.stdout
    # Whether a host switched or needed no change, its line ends with its node's state.
    lines = result.stdout.splitlines()
    for host in fleet.hosts:
        assert any(
            f"] {host.name}: ok, " in line and f"Tailscale is Running as {host.name} (" in line
            for line in lines
        ), host.name
    # Deployed again, nothing changed: one check per host, reported as it finishes.
    again = fleet.tailnix("deploy", "-i", "inventory.py")
    assert again.returncode == 0, again.stderr
    for host in fleet.hosts:
        assert f"{host.name}: ok, -, Tailscale is Running as {host.name} (" in again.stdout, again.stdout
    assert "HOST" in result.stdout and "SWITCHED" in result.stdout
    assert f"{total} hosts deployed: {total} ok, 0 failed" in result.stdout
    dry = fleet.tailnix("deploy", "-i", "inventory.py", "--dry")
    assert dry.returncode == 0, dry.stderr
    assert all(f"{h.name}: nothing to do" in dry.stdout for h in fleet.hosts)


def test_status_json_follows_the_documented_schema(fleet: Fleet, rotated: tuple[str, str]) -> None:
    result = fleet.tailnix("status", "-i", "inventory.py", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["schema"] == 1 and document["healthy"] is True
    assert document["mesh"] == {"ok": True, "members": sorted(h.name for h in fleet.hosts), "problems": []}
    assert [host["name"] for host in document["hosts"]] == [h.name for h in fleet.hosts]
    for host in document["hosts"]:
        assert set(host) == {
            "name", "reachable", "nixos_version", "backend_state", "tailscale_ips", "dns_name",
            "node_key_expiry", "tags", "unapproved_routes", "warnings", "health", "module_current",
            "last_switch", "drift", "problems", "healthy",
        }  # fmt: skip
        assert host["unapproved_routes"] == []
        assert host["drift"] == [], "a node as tailnix left it has no drift"
        assert host["reachable"] is True and host["healthy"] is True and host["problems"] == []
        assert host["health"] == []
        assert host["nixos_version"] == "25.11" and host["backend_state"] == "Running"
        assert host["tailscale_ips"][0].startswith("100.64.0.")
        assert host["module_current"] is True
        assert host["last_switch"].endswith("Z") and host["node_key_expiry"].endswith("Z")


def test_status_names_a_host_that_is_not_running(fleet: Fleet, rotated: tuple[str, str]) -> None:
    host = fleet.hosts[0].name
    fleet.lab.ssh(host, "tailscale down")
    try:
        result = fleet.tailnix("status", "-i", "inventory.py")
        assert result.returncode == 1
        assert f"{host}: BackendState is Stopped" in result.stderr
        total = len(fleet.hosts)
        assert f"of {total} hosts healthy; mesh incomplete: {total - 1} of {total} hosts on the tailnet" in (
            result.stdout
        )
    finally:
        fleet.lab.ssh(host, "tailscale up")


def test_check_exit_codes_fine_warning_and_expired(fleet: Fleet, rotated: tuple[str, str]) -> None:
    fine = fleet.tailnix("check", "-i", "inventory.py")
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert "ok: the auth key expires on" in fine.stdout

    soon = ControlPlane(fleet.lab.layout.control).mint_key(expiry_days=5)
    warned = fleet.tailnix("rotate-key", "-i", "inventory.py", "--days", "5", "--no-deploy", stdin=soon)
    assert warned.returncode == 0, warned.stderr
    warning = fleet.tailnix("check", "-i", "inventory.py")
    assert warning.returncode == 1
    assert "warning: the auth key expires on" in warning.stderr and "in 5 days" in warning.stderr

    fleet.tailnix("rotate-key", "-i", "inventory.py", "--days", "5", "--no-deploy", stdin=soon)
    from tailnix.sops import set_value

    set_value(
        fleet.secrets,
        "tailscale_auth_key_expires_unencrypted",
        "2020-01-01",
        config=fleet.sops_config,
        age_key_file=fleet.lab.layout.admin_agekey,
    )
    expired = fleet.tailnix("check", "-i", "inventory.py")
    assert expired.returncode == 2
    assert "error: the auth key expired on 2020-01-01" in expired.stderr


def test_rotate_key_mints_the_key_with_an_oauth_client(fleet: Fleet, rotated: tuple[str, str]) -> None:
    before = fleet.secrets.read_bytes()
    no_client = {"TS_API_CLIENT_ID": "", "TS_API_CLIENT_SECRET": ""}
    # A missing OAuth client is something to set up (exit 1); options that do not go together are a usage
    # error (exit 2, as the README's table says).
    for arguments, words, code in (
        (
            ("--mint", "--tag", "tag:server"),
            "no OAuth client: set $TS_API_CLIENT_ID and $TS_API_CLIENT_SECRET",
            1,
        ),
        (
            ("--mint", "--tag", "tag:server", "--expires", "2027-01-01"),
            "--expires is for a key made elsewhere",
            2,
        ),
        (("--tag", "tag:server"), "--tag, --single-use, --ephemeral and --oauth-file go with --mint", 2),
    ):
        misused = fleet.tailnix("rotate-key", "-i", "inventory.py", *arguments, env=no_client)
        assert misused.returncode == code and words in misused.stderr, misused.stderr
        assert fleet.secrets.read_bytes() == before
    with TailscaleApi(fleet.lab.layout.control) as api:
        client_id, secret = api.add_client(("tag:server",))
        env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
        mint_args = ("rotate-key", "-i", "inventory.py", "--mint", "--tag", "tag:server", "--days", "30")
        refused = fleet.tailnix(*mint_args, env={**env, "TS_API_CLIENT_SECRET": secret + "x"})
        assert refused.returncode == 1
        assert "/api/v2/oauth/token answered 401: invalid client id or secret" in refused.stderr
        assert fleet.secrets.read_bytes() == before
        result = fleet.tailnix(*mint_args, env=env)
    assert result.returncode == 0, result.stderr
    key = decrypt_value(fleet.secrets, "tailscale_auth_key", age_key_file=fleet.lab.layout.admin_agekey)
    parsed = parse_auth_key(key)
    assert parsed is not None
    record = ControlPlane(fleet.lab.layout.control).key(parsed.key_id)
    assert record is not None and record["tags"] == ["tag:server"] and record["reusable"]
    assert f"minted auth key {parsed.key_id} (reusable, tag:server) from {api.url}" in result.stdout
    expires = read_metadata(fleet.secrets).unencrypted["tailscale_auth_key_expires_unencrypted"]
    assert f"it expires on {expires}" in result.stdout
    for host in fleet.hosts:
        assert backend_state(fleet.lab, host.name) == "Running"
    # Neither the client secret nor the key shows in the output, a sops argument or a file.
    for hidden in (secret, key.rsplit("-", 1)[1]):
        assert hidden not in result.stdout + result.stderr
        assert hidden not in fleet.sops_argv_log.read_text()
        for path in fleet.directory.rglob("*"):
            if path.is_file():
                assert hidden not in path.read_text(errors="replace"), path


def test_rotate_key_quiet_shows_the_deploy_of_each_host_only_when_it_fails(
    fleet: Fleet, rotated: tuple[str, str]
) -> None:
    new_key = ControlPlane(fleet.lab.layout.control).mint_key(reusable=True, expiry_days=90)
    quiet = fleet.tailnix("rotate-key", "--quiet", "-i", "inventory.py", stdin=new_key + "\n")
    assert quiet.returncode == 0, quiet.stderr
    total = len(fleet.hosts)
    assert quiet.stdout == f"{total} hosts deployed: {total} ok, 0 failed\n"
    # Without --quiet the same deploy shows each host's steps as they start, then its result.
    loud = fleet.tailnix("rotate-key", "-i", "inventory.py", stdin=new_key + "\n")
    assert loud.returncode == 0, loud.stderr
    lines = loud.stdout.splitlines()
    for host in fleet.hosts:
        switch = lines.index(f"{host.name}: nixos-rebuild switch ...")
        verify = lines.index(f"{host.name}: Verify Tailscale is Running ...")
        ended = next(i for i, line in enumerate(lines) if f"] {host.name}: ok, switched, " in line)
        assert switch < verify < ended, loud.stdout


def test_forget_removes_the_recipient_and_its_key_no_longer_opens_the_file(fleet: Fleet) -> None:
    host = fleet.hosts[1]
    private = fleet.lab.ssh(host.name, "cat /etc/ssh/ssh_host_ed25519_key").stdout
    identity = fleet.directory / "host.agekey"
    identity.write_text(ssh_private_key_to_age_identity(private) + "\n")
    identity.chmod(0o600)
    decrypt_value(fleet.secrets, "tailscale_auth_key", age_key_file=identity)  # it can, before

    result = fleet.tailnix("forget", host.name, "-i", "inventory.py")
    assert result.returncode == 0, result.stderr
    assert f"&{host.name}" not in fleet.sops_config.read_text()
    assert fleet.sops_config.read_text().startswith(COMMENT)
    assert fleet.recipient(host) not in read_metadata(fleet.secrets).recipients
    with pytest.raises(SopsError):
        decrypt_value(fleet.secrets, "tailscale_auth_key", age_key_file=identity)
    assert f"note: {host.name} is still in inventory.py" in result.stdout
    assert (
        f"note: {host.name} could decrypt the auth key until now, and may keep a copy: revoke that key in the "
        "admin console and put a new one in with `tailnix rotate-key`" in result.stdout
    )

    missing = fleet.tailnix("check", "-i", "inventory.py")
    assert missing.returncode == 2
    assert f"{host.name} has no recipient in .sops.yaml" in missing.stderr
    identity.unlink()
