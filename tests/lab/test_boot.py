"""A reboot of a lab host (`emulator/boot.py`): what a NixOS machine runs from power-off to multi-user.target."""

from __future__ import annotations

import json

import pytest

from tailnix.nix_imports import add_import
from tailnix_lab.boot_bench import reboot_host, seed_module
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab, LabHost

pytestmark = pytest.mark.lab

# `first` waits (bounded) until `third` has started; `second` is ordered after `first`; `third` is ordered
# after a unit NixOS does not have. The journal says what each saw.
ORDER_UNITS = """\
{ pkgs, ... }: {
  systemd.services.first = {
    wantedBy = [ "multi-user.target" ];
    serviceConfig.Type = "oneshot";
    script = ''
      for _ in $(seq 100); do [ -e /run/third-started ] && break; sleep 0.1; done
      echo "first saw third started: $([ -e /run/third-started ] && echo yes || echo no)"
      touch /run/first-done
    '';
  };
  systemd.services.second = {
    wantedBy = [ "multi-user.target" ];
    after = [ "first.service" ];
    serviceConfig.Type = "oneshot";
    script = ''
      echo "second saw first done: $([ -e /run/first-done ] && echo yes || echo no)"
    '';
  };
  systemd.services.third = {
    wantedBy = [ "multi-user.target" ];
    after = [ "tailscale.service" ];
    wants = [ "tailscale.service" ];
    serviceConfig.Type = "oneshot";
    script = "touch /run/third-started";
  };
}
"""


def _import_module(lab: Lab, host: str, path: str, text: str) -> None:
    lab.ssh(host, f"cat > {path}", input=text)
    configuration = lab.ssh(host, "cat /etc/nixos/configuration.nix").stdout
    name = path.rsplit("/", 1)[1]
    lab.ssh(host, "cat > /etc/nixos/configuration.nix", input=add_import(configuration, f"./{name}"))


def _journal(lab: Lab, host: str, unit: str) -> str:
    return lab.ssh(host, f"journalctl -u {unit} --no-pager").stdout


def test_boot_starts_the_transaction_at_once_and_orders_only_after_units_that_exist(
    lab: Lab, clean_nixos_host: LabHost
) -> None:
    """systemd starts the units of the boot transaction at once; After= delays a start-up only when both
    units are being started, and units with no ordering between them start simultaneously (systemd
    `man/systemd.unit.xml`, Before=/After=), so an After= of a unit that does not exist orders against
    nothing. NixOS has `tailscaled.service`, no `tailscale.service` (nixpkgs
    `nixos/modules/services/networking/tailscale.nix`)."""
    host = clean_nixos_host.name
    _import_module(lab, host, "/etc/nixos/order.nix", ORDER_UNITS)
    # `nixos-rebuild boot` makes it the default generation without activating it: the reboot runs it.
    assert lab.ssh(host, "nixos-rebuild boot", check=False).returncode == 0
    assert lab.ssh(host, "systemctl is-active first", check=False).stdout.strip() == "inactive"

    report = reboot_host(lab, host, first_boot=False, watch_seconds=None)

    assert report["failed_units"] == []
    assert "first saw third started: yes" in _journal(lab, host, "first")
    assert "second saw first done: yes" in _journal(lab, host, "second")
    # /run is a tmpfs: the files the units made are from this boot, the secrets of the last one are gone.
    assert lab.ssh(host, "ls /run/secrets", check=False).returncode != 0


def test_first_boot_of_a_fresh_host_joins_with_the_seed_recipe_after_its_sleep(
    lab: Lab, clean_nixos_host: LabHost
) -> None:
    """The seed post's unit, ordered after `tailscale.service` (so after nothing on NixOS), starts with
    tailscaled, sleeps 2 s, finds the node NeedsLogin (a fresh disk has no node state) and logs in with
    `-authkey`: a new login at control, and Running."""
    host = clean_nixos_host.name
    control = ControlPlane(lab.layout.control)
    key = control.mint_key(reusable=True, expiry_days=1)
    _import_module(lab, host, "/etc/nixos/seed-autoconnect.nix", seed_module(key))
    assert lab.ssh(host, "nixos-rebuild boot", check=False).returncode == 0
    logins = len(control.logins())

    report = reboot_host(lab, host, first_boot=True, watch_seconds=30)

    assert report["failed_units"] == []
    assert isinstance(report["running_seen"], float) and isinstance(report["tailscaled_started"], float)
    status = json.loads(lab.ssh(host, "tailscale status --json --peers=false").stdout)
    assert status["BackendState"] == "Running"
    assert status["Self"]["HostName"] == host
    assert len(control.logins()) == logins + 1
    journal = _journal(lab, host, "tailscale-autoconnect")
    assert "ordering dependency on tailscale.service, which does not exist; ignoring." in journal
    assert "Finished Automatic connection to Tailscale." in journal
