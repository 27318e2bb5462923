"""A fleet on a headscale login server, end to end: `rotate-key --mint` mints on the headscale host over SSH.

The headscale host is a lab other-OS host with the lab's `headscale` (the CLI of headscale v0.29.2:
`cmd/headscale/cli/preauthkeys.go` `create` with `--user` a numeric ID, `users.go` `list -o json`,
`utils.go` `printError`, exit 1). One NixOS host, bootstrapped with a first headscale key, Running.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tailnix.sops import decrypt_value
from tailnix_lab.hosts import Lab, LabHost

from .test_fleet import Fleet, backend_state, logins_of, new_fleet

pytestmark = pytest.mark.lab

LOGIN_SERVER = "https://headscale.example.com"
USER = "fleet"


@dataclass
class HeadscaleFleet:
    fleet: Fleet
    server: LabHost
    sudo_server: LabHost | None = None
    """Another headscale host (the lab's control plane is one), reached as an admin with sudo."""
    user: str = USER

    def write_inventory(self, extra: tuple[str, ...] = (), **data: object) -> None:
        """The NixOS hosts (and the `extra` ones) with the headscale settings (and `data` over them), and the
        headscale hosts."""
        settings = {
            "tailscale_login_server": LOGIN_SERVER,
            "tailnix_headscale_host": self.server.name,
            "tailnix_headscale_user": self.user,
        }
        nodes = [host.name for host in self.fleet.hosts] + list(extra)
        servers = [self.server.name] + ([self.sudo_server.name] if self.sudo_server else [])
        self.fleet.lab.write_inventory(
            self.fleet.inventory,
            hosts=nodes + servers,
            host_data={
                name: {k: v for k, v in {**settings, **data}.items() if v is not None} for name in nodes
            },
            secrets_file=self.fleet.secrets,
        )

    def nodes(self) -> list[dict[str, Any]]:
        """`headscale nodes list -o json` on the headscale host."""
        return list(json.loads(self.fleet.lab.ssh(self.server.name, "headscale nodes list -o json").stdout))

    def mint(self, *arguments: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        (host,) = self.fleet.hosts
        result = self.fleet.tailnix(
            "rotate-key", "-i", "inventory.py", "--limit", host.name, "--mint", *arguments
        )
        return result.stdout + result.stderr, result

    def key(self) -> str:
        return decrypt_value(
            self.fleet.secrets, "tailscale_auth_key", age_key_file=self.fleet.lab.layout.admin_agekey
        )


def headscale_key(lab: Lab, server: str, user: str = USER) -> str:
    """A reusable 90-day pre-auth key of `user`, minted on the headscale host `server`."""
    users = json.loads(lab.ssh(server, "headscale users list -o json").stdout)
    user_id = next(u["id"] for u in users if u["name"] == user)
    created = lab.ssh(
        server, f"headscale preauthkeys create --user {user_id} --reusable --expiration 90d -o json"
    )
    return str(json.loads(created.stdout)["key"])


@pytest.fixture(scope="module")
def hs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadscaleFleet]:
    server = lab.add_host(os="debian")
    sudo_server = lab.add_host(os="debian", sudo_user="deploy")
    lab.ssh(server.name, f"headscale users create {USER}")
    host = lab.add_host(os="nixos")
    directory: Path = tmp_path_factory.mktemp("headscale-fleet")
    fleet = new_fleet(lab, directory, [host], headscale_key(lab, server.name))
    created = HeadscaleFleet(fleet, server, sudo_server)
    created.write_inventory()
    bootstrapped = created.fleet.tailnix("bootstrap", host.name, "-i", "inventory.py")
    assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
    yield created
    for stopped in (host, server, sudo_server):
        lab.stop_host(stopped.name)


def test_rotate_key_mints_on_the_headscale_host_and_the_host_stays_running(hs: HeadscaleFleet) -> None:
    (host,) = hs.fleet.hosts
    said, result = hs.mint("--days", "30")
    assert result.returncode == 0, said
    key = hs.key()
    assert key.startswith("hskey-auth-") and key != hs.fleet.first_key
    assert key not in said
    assert f"of the headscale user {USER} on {hs.server.name} for {LOGIN_SERVER}" in said
    assert f"{host.name}: ok, switched" in said
    assert backend_state(hs.fleet.lab, host.name) == "Running"
    # A node logged out comes back with the new key at the next deploy: the key is the headscale server's.
    hs.fleet.lab.ssh(host.name, "tailscale logout")
    deployed = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert backend_state(hs.fleet.lab, host.name) == "Running"
    assert logins_of(hs.fleet.lab, host.name)[-1]["key_id"] == key[len("hskey-auth-") :][:12]


def test_a_headscale_host_reached_through_sudo_runs_headscale_as_root(hs: HeadscaleFleet) -> None:
    first = hs.key()
    assert hs.sudo_server is not None
    hs.write_inventory(tailnix_headscale_host=hs.sudo_server.name)
    try:
        said, result = hs.mint("--days", "30", "--no-deploy")
    finally:
        hs.write_inventory()
    assert result.returncode == 0, said
    assert f"of the headscale user {USER} on {hs.sudo_server.name}" in said
    assert hs.key() != first


def test_if_expiring_within_leaves_a_fresh_headscale_key_alone(hs: HeadscaleFleet) -> None:
    before = hs.fleet.secrets.read_bytes()
    said, result = hs.mint("--days", "30", "--if-expiring-within", "7")
    assert result.returncode == 0, said
    assert re.search(rf"\(headscale on {hs.server.name}\), in \d+ days, more than 7: nothing to do", said)
    assert hs.fleet.secrets.read_bytes() == before


def test_if_expiring_within_rotates_a_key_expired_on_the_headscale_server(hs: HeadscaleFleet) -> None:
    """The server's expiry, not the recorded one: `headscale preauthkeys list -o json` lists the key by its
    prefix (v0.29.2 `hscontrol/types/preauth_key.go`), `preauthkeys expire --id ID` expires it there."""
    key = hs.key()
    listed = json.loads(hs.fleet.lab.ssh(hs.server.name, "headscale preauthkeys list -o json").stdout)
    [record] = [k for k in listed if k["key"] == key[: len("hskey-auth-") + 12] + "-***"]
    hs.fleet.lab.ssh(hs.server.name, f"headscale preauthkeys expire --id {record['id']}")
    said, result = hs.mint("--days", "30", "--if-expiring-within", "7", "--no-deploy")
    assert result.returncode == 0, said
    assert f"(headscale on {hs.server.name}), in 0 days, within 7: rotating" in said
    assert hs.key() != key


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"tailnix_headscale_user": "nobody"},
            "tailnix_headscale_user = 'nobody': no such user on the headscale host",
        ),
        ({"tailnix_headscale_host": None}, "and there is no tailnix_headscale_host"),
        ({"tailnix_headscale_host": "hs-9"}, "tailnix_headscale_host = 'hs-9': not a host of the inventory"),
    ],
)
def test_a_refused_mint_names_the_field_and_leaves_the_secrets_file_alone(
    hs: HeadscaleFleet, data: dict[str, object], expected: str
) -> None:
    before = hs.fleet.secrets.read_bytes()
    hs.write_inventory(**data)
    try:
        said, result = hs.mint("--days", "30")
    finally:
        hs.write_inventory()
    assert result.returncode == 1, said
    assert expected in said
    assert hs.fleet.secrets.read_bytes() == before


def test_a_headscale_error_is_shown_with_the_host_and_the_file_left_alone(hs: HeadscaleFleet) -> None:
    before = hs.fleet.secrets.read_bytes()
    said, result = hs.mint("--days", "30", "--tag", "tag:Web")
    assert result.returncode == 1, said
    assert f"{hs.server.name}: `headscale preauthkeys create" in said
    assert "tag should be lowercase" in said
    assert hs.fleet.secrets.read_bytes() == before


def test_hosts_that_disagree_on_the_login_server_are_named(hs: HeadscaleFleet) -> None:
    (host,) = hs.fleet.hosts
    before = hs.fleet.secrets.read_bytes()
    result = hs.fleet.tailnix("rotate-key", "-i", "inventory.py", "--mint", "--days", "30")
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    # The headscale host the node names is left out (the server, not a node); the other one is not.
    assert (
        f"tailscale_login_server differs between the hosts ({host.name}: '{LOGIN_SERVER}'; "
        f"{hs.sudo_server and hs.sudo_server.name}: not set)" in said
    )
    assert hs.fleet.secrets.read_bytes() == before


def test_without_the_headscale_host_a_tag_change_is_refused_with_the_command_to_run(
    hs: HeadscaleFleet,
) -> None:
    """headscale v0.29.2 `hscontrol/state/state.go` (`HandleNodeFromPreAuthKey`) keeps a node's tags when it logs
    in again; `cmd/headscale/cli/nodes.go` `headscale nodes tag -i ID -t TAGS` changes them."""
    (host,) = hs.fleet.hosts
    before = hs.fleet.lab.ssh(host.name, "cat /etc/nixos/configuration.nix; ls /etc/nixos").stdout
    hs.write_inventory(tailscale_advertise_tags=["tag:web"], tailnix_headscale_host=None)
    try:
        result = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name)
    finally:
        hs.write_inventory()
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert (
        f"{host.name}: its tags cannot change from none to tag:web by logging in again on {LOGIN_SERVER}"
        in said
    )
    [node] = [n for n in hs.nodes() if n["name"] == host.name]
    assert f"On the headscale server run: headscale nodes tag -i {node['id']} -t tag:web" in said
    assert hs.fleet.lab.ssh(host.name, "cat /etc/nixos/configuration.nix; ls /etc/nixos").stdout == before
    assert backend_state(hs.fleet.lab, host.name) == "Running"
    assert "tags" not in node


def test_with_the_headscale_host_the_deploy_sets_the_tags_there(hs: HeadscaleFleet) -> None:
    """`headscale nodes tag` over SSH on the headscale host, then the granted tags (`Self.Tags`) verified; the
    node does not log in again and keeps its ID."""
    (host,) = hs.fleet.hosts
    [node] = [n for n in hs.nodes() if n["name"] == host.name]
    logins = len(logins_of(hs.fleet.lab, host.name))
    hs.write_inventory(tailscale_advertise_tags=["tag:web"])
    try:
        dry = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name, "--dry")
        assert [n.get("tags") for n in hs.nodes() if n["id"] == node["id"]] == [None]
        result = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name)
        again = hs.fleet.tailnix("deploy", "-i", "inventory.py", "--limit", host.name)
    finally:
        hs.write_inventory()
    command = f"`headscale nodes tag -i {node['id']} -t tag:web` on {hs.server.name}"
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"{host.name}: retag on headscale: tags none -> tag:web ({command})" in dry.stdout
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert f"{host.name}: tags none -> tag:web on headscale ({command})" in said
    [tagged] = [n for n in hs.nodes() if n["id"] == node["id"]]
    assert tagged["tags"] == ["tag:web"] and tagged["user"]["name"] == "tagged-devices"
    own = json.loads(hs.fleet.lab.ssh(host.name, "tailscale status --json --peers=false").stdout)["Self"]
    assert own["Tags"] == ["tag:web"] and own["ID"] == str(node["id"])
    assert len(logins_of(hs.fleet.lab, host.name)) == logins
    assert again.returncode == 0, again.stdout + again.stderr
    assert "headscale nodes tag" not in again.stdout + again.stderr
