"""`tailnix retire HOST` end to end on lab hosts: the reverse of bootstrap.

One fleet of three fresh hosts, bootstrapped once and Running: one is retired while it answers (reached
as a non-root admin with sudo), one after its SSH has stopped answering, and one stays. The tests run in
the order of a fleet's life.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tailnix.agekey import ssh_private_key_to_age_identity
from tailnix.sops import SopsError, decrypt_value, read_metadata
from tailnix_lab.emulator.api import TailscaleApi
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab

from .deploying import SUDO_USER, etc_nixos
from .test_fleet import Fleet, backend_state, new_fleet

pytestmark = pytest.mark.lab

OWN_HOSTNAME = "mailbox"


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three fresh hosts, bootstrapped and Running: the one to retire (sudo), the one to lose, the one to keep."""
    directory = tmp_path_factory.mktemp("retire-fleet")
    hosts = [
        lab.add_host(os="nixos", sudo_user=SUDO_USER),
        lab.add_host(os="nixos"),
        lab.add_host(os="nixos"),
    ]
    # The one to lose calls itself `mailbox` (its own hostname, not its inventory name), and the one to
    # keep joins under the lost one's inventory name: only the node recorded at the last deploy tells
    # which device is whose.
    lab.ssh(
        hosts[1].name,
        f'sed -i \'s/networking.hostName = "{hosts[1].name}"/networking.hostName = "{OWN_HOSTNAME}"/\' '
        f"/etc/nixos/configuration.nix && echo {OWN_HOSTNAME} > /etc/hostname",
    )
    first_key = ControlPlane(lab.layout.control).mint_key(reusable=True)
    created = new_fleet(lab, directory, hosts, first_key)
    created.write_inventory(**{hosts[2].name: {"tailscale_hostname": hosts[1].name}})
    for host in hosts:
        configuration = lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
        (directory / f"{host.name}.configuration.nix").write_text(configuration)
    bootstrapped = created.tailnix("bootstrap", *(h.name for h in hosts), "-i", "inventory.py")
    assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


def _retire(
    fleet: Fleet, api: TailscaleApi, *arguments: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    client_id, secret = api.add_client(("tag:server",))
    env = {"TS_API_CLIENT_ID": client_id, "TS_API_CLIENT_SECRET": secret, "TS_BASE_URL": api.url}
    return fleet.tailnix("retire", *arguments, "-i", "inventory.py", stdin=stdin, env=env)


def _devices(fleet: Fleet, name: str) -> list[dict[str, object]]:
    return [n for n in ControlPlane(fleet.lab.layout.control).nodes() if n["HostName"] == name]


def _host_identity(fleet: Fleet, name: str) -> str:
    private = fleet.lab.ssh(name, "cat /etc/ssh/ssh_host_ed25519_key").stdout
    identity = fleet.directory / f"{name}.agekey"
    identity.write_text(ssh_private_key_to_age_identity(private) + "\n")
    identity.chmod(0o600)
    return str(identity)


def test_dry_run_and_an_unanswered_question_change_nothing(fleet: Fleet) -> None:
    host = fleet.hosts[0].name
    files = etc_nixos(fleet.lab, host)
    before = (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes())
    with TailscaleApi(fleet.lab.layout.control) as api:
        dry = _retire(fleet, api, host, "--dry")
        unanswered = _retire(fleet, api, host)
        asked = [(r.method, r.path) for r in api.requests]
    assert dry.returncode == 0, dry.stdout + dry.stderr
    [device] = _devices(fleet, host)
    assert dry.stdout.splitlines() == [
        f"{host}: log the node out (tailscale logout)",
        f"{host}: remove tailscale-autoconnect.nix, secrets/tailscale.yaml, the import in "
        "/etc/nixos/configuration.nix; nixos-rebuild switch",
        f"tailnet: delete the device {str(device['DNSName']).rstrip('.')} ({device['ID']})",
        f".sops.yaml: remove the recipient &{host} ({fleet.recipient(fleet.hosts[0])}) and re-encrypt",
    ]
    assert unanswered.returncode == 1
    assert unanswered.stdout.endswith("not confirmed: nothing was changed\n")
    assert ("DELETE", f"/api/v2/device/{device['ID']}") not in asked
    assert etc_nixos(fleet.lab, host) == files
    assert (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes()) == before
    assert backend_state(fleet.lab, host) == "Running"


@pytest.fixture(scope="module")
def retired(fleet: Fleet) -> tuple[subprocess.CompletedProcess[str], str]:
    """The first host retired while it answers: the run, and its host key as an age identity file."""
    host = fleet.hosts[0].name
    identity = _host_identity(fleet, host)
    with TailscaleApi(fleet.lab.layout.control) as api:
        return _retire(fleet, api, host, "--yes"), identity


def test_retire_takes_a_reachable_host_off(
    fleet: Fleet, retired: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    host = fleet.hosts[0].name
    result, identity = retired
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{host}: logged out; removed tailscale-autoconnect.nix" in result.stdout
    assert "switched, and confirmed over a new SSH connection" in result.stdout
    assert "tailnet: deleted the device" in result.stdout

    listing = fleet.lab.ssh(host, "ls -A /etc/nixos").stdout.split()
    assert "tailscale-autoconnect.nix" not in listing and "secrets" not in listing
    configuration = fleet.lab.ssh(host, "cat /etc/nixos/configuration.nix").stdout
    assert configuration == (fleet.directory / f"{host}.configuration.nix").read_text()
    # The module is gone, so is tailscaled.service: the switch stopped it.
    assert fleet.lab.ssh(host, "systemctl is-active tailscaled", check=False).stdout.strip() == "inactive"
    assert _devices(fleet, host) == []

    assert f"&{host}" not in fleet.sops_config.read_text()
    assert fleet.recipient(fleet.hosts[0]) not in read_metadata(fleet.secrets).recipients
    with pytest.raises(SopsError):
        decrypt_value(fleet.secrets, "tailscale_auth_key", age_key_file=identity)
    assert backend_state(fleet.lab, fleet.hosts[2].name) == "Running"


def test_a_second_retire_does_nothing(
    fleet: Fleet, retired: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    host = fleet.hosts[0].name
    before = (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes(), etc_nixos(fleet.lab, host))
    with TailscaleApi(fleet.lab.layout.control) as api:
        again = _retire(fleet, api, host, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout == f"{host}: retired already: nothing to do\n"
    assert (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes(), etc_nixos(fleet.lab, host)) == before


def test_without_an_oauth_client_it_says_the_device_was_not_deleted_and_how_to(
    fleet: Fleet, retired: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    host = fleet.hosts[0].name
    before = (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes())
    result = fleet.tailnix("retire", host, "-i", "inventory.py", "--yes")
    assert result.returncode == 1
    assert (
        f"tailnet: error: no OAuth client ($TS_API_CLIENT_ID and $TS_API_CLIENT_SECRET, or --oauth-file): the device {host} is not deleted; remove it in the admin console"
        in result.stderr
    )
    assert (fleet.sops_config.read_bytes(), fleet.secrets.read_bytes()) == before


def _recorded(fleet: Fleet) -> dict[str, dict[str, object]]:
    hosts = json.loads((fleet.directory / "tailnix-nodes.json").read_text())["hosts"]
    assert isinstance(hosts, dict)
    return hosts


@pytest.fixture(scope="module")
def lost(fleet: Fleet) -> subprocess.CompletedProcess[str]:
    """The second host retired after its SSH stopped answering."""
    gone = fleet.hosts[1].name
    [device] = _devices(fleet, OWN_HOSTNAME)
    assert _recorded(fleet)[gone] == {
        "node_id": device["ID"],
        "hostname": OWN_HOSTNAME,
        "dns_name": device["DNSName"],
        "tailscale_ips": device["TailscaleIPs"],
        "approved_routes": [],
    }
    fleet.lab.stop_host(gone)
    with TailscaleApi(fleet.lab.layout.control) as api:
        dry = _retire(fleet, api, gone, "--dry")
        assert (
            f"tailnet: delete the device {str(device['DNSName']).rstrip('.')} ({device['ID']}), the node its last "
            "deploy saw (tailnix-nodes.json)"
        ) in dry.stdout, dry.stdout + dry.stderr
        return _retire(fleet, api, gone, "--yes")


def test_an_unreachable_host_loses_its_device_and_recipient_and_keeps_its_files(
    fleet: Fleet, lost: subprocess.CompletedProcess[str]
) -> None:
    gone, kept, result = fleet.hosts[1], fleet.hosts[2], lost
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{gone.name}: error: not reached" in result.stderr
    assert (
        "tailscale-autoconnect.nix, the secrets file and the import were left in /etc/nixos" in result.stderr
    )
    [kept_device] = _devices(fleet, gone.name)  # the kept host's node, under the lost one's inventory name
    assert kept_device["ID"] == _recorded(fleet)[kept.name]["node_id"]
    assert f"tailnet: deleted the device {OWN_HOSTNAME}." in result.stdout
    assert _devices(fleet, OWN_HOSTNAME) == []
    assert gone.name not in _recorded(fleet)
    assert f"&{gone.name}" not in fleet.sops_config.read_text()
    assert fleet.recipient(gone) not in read_metadata(fleet.secrets).recipients
    assert backend_state(fleet.lab, kept.name) == "Running"


def test_a_git_flake_host_whose_flake_names_the_module_gets_its_flake_back(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    host = lab.add_host(os="nixos", flake="inline", git=True)
    try:
        directory = tmp_path_factory.mktemp("retire-flake")
        flake = new_fleet(lab, directory, [host], ControlPlane(lab.layout.control).mint_key(reusable=True))
        flake.write_inventory()
        before = lab.ssh(host.name, "cat /etc/nixos/flake.nix").stdout
        configuration = lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
        # As the deploy tells a flake that does not build from configuration.nix: the module in its modules.
        lab.ssh(
            host.name,
            "sed -i 's|        ./hardware-configuration.nix|        ./hardware-configuration.nix\\n"
            "        ./tailscale-autoconnect.nix|' /etc/nixos/flake.nix",
        )
        bootstrapped = flake.tailnix("bootstrap", host.name, "-i", "inventory.py")
        assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr

        result = flake.tailnix("retire", host.name, "-i", "inventory.py", "--yes", "--keep-device")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the entry in /etc/nixos/flake.nix" in result.stdout
        assert "tailnet: the device is kept (--keep-device)" in result.stdout
        assert lab.ssh(host.name, "cat /etc/nixos/flake.nix").stdout == before
        assert lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout == configuration
        assert lab.ssh(host.name, "git -C /etc/nixos status --porcelain").stdout.strip() == ""
        [device] = _devices(flake, host.name)  # kept, and logged out
        assert device["LoggedOut"] is True
    finally:
        lab.stop_host(host.name)


def test_a_host_gone_from_the_inventory_is_retired_already(
    fleet: Fleet, lost: subprocess.CompletedProcess[str]
) -> None:
    gone, kept = fleet.hosts[1], fleet.hosts[2]
    fleet.lab.write_inventory(fleet.inventory, hosts=[kept.name], secrets_file=fleet.secrets)
    with TailscaleApi(fleet.lab.layout.control) as api:
        again = _retire(fleet, api, gone.name, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout == f"{gone.name}: retired already: nothing to do\n"
    # The kept host's node has the gone host's inventory name, and is recorded as the kept host's.
    [kept_device] = _devices(fleet, gone.name)
    assert kept_device["ID"] == _recorded(fleet)[kept.name]["node_id"]


def test_a_switch_that_fails_puts_every_file_back(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> None:
    host = lab.add_host(os="nixos")
    try:
        directory = tmp_path_factory.mktemp("retire-failing")
        failing = new_fleet(lab, directory, [host], ControlPlane(lab.layout.control).mint_key(reusable=True))
        failing.write_inventory()
        bootstrapped = failing.tailnix("bootstrap", host.name, "-i", "inventory.py")
        assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
        # An option NixOS does not have, added by hand since: the switch stops at evaluation.
        lab.ssh(
            host.name,
            "sed -i 's/services.openssh.enable = true;/services.openssh.enable = true;\\n  services.tailscal.enable = true;/' "
            "/etc/nixos/configuration.nix",
        )
        before = etc_nixos(lab, host.name)
        result = failing.tailnix("retire", host.name, "-i", "inventory.py", "--yes", "--keep-device")
        assert result.returncode == 1
        assert (
            f"{host.name}: error: nixos-rebuild switch failed (exit 1: the configuration did not evaluate or "
            "build; /etc/nixos restored)" in result.stderr
        )
        assert f"`tailnix deploy --limit {host.name}` logs it in again" in result.stderr
        assert etc_nixos(lab, host.name) == before
    finally:
        lab.stop_host(host.name)


def test_an_empty_imports_list_comes_back_from_the_copy_the_deploy_kept(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> None:
    host = lab.add_host(os="nixos")
    try:
        directory = tmp_path_factory.mktemp("retire-empty-list")
        plain = new_fleet(lab, directory, [host], ControlPlane(lab.layout.control).mint_key(reusable=True))
        plain.write_inventory()
        # `imports = [ ];` with the import added reads exactly as an `imports` the deploy added whole: only
        # the copy kept in /var/lib/tailnix/backup tells them apart.
        lab.ssh(
            host.name,
            "sed -i -z 's|imports =\\n    \\[ # Include the results of the hardware scan.\\n"
            "      ./hardware-configuration.nix\\n    \\];|imports = [ ];|' /etc/nixos/configuration.nix",
        )
        configuration = lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
        assert "  imports = [ ];\n" in configuration
        bootstrapped = plain.tailnix("bootstrap", host.name, "-i", "inventory.py")
        assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
        assert (
            "imports = [ ./tailscale-autoconnect.nix ];"
            in lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
        )

        result = plain.tailnix("retire", host.name, "-i", "inventory.py", "--yes", "--keep-device")
        assert result.returncode == 0, result.stdout + result.stderr
        assert lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout == configuration
    finally:
        lab.stop_host(host.name)
