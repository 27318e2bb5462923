"""`tailscale_set`: prefs only `tailscale set` changes, applied on a Running host without a new login.

Source: tailscale v1.90.6 `cmd/tailscale/cli/set.go` (`newSetFlagSet`: `--webclient`, `--relay-server-port`,
`--update-check`, `--auto-update` (refused where `clientupdate.CanAutoUpdate()` is false, as on NixOS), `--nickname`, which `up` does not have; `set` edits the named prefs with
`EditPrefs` and never logs in) and `ipn/prefs.go` (`RunWebClient`, `RelayServerPort`, `AutoUpdate.Check`), as
`tailscale debug prefs` prints them. The lab's control plane counts logins: the number must not change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailnix_lab.hosts import Lab

from .test_fleet import logins_of
from .test_keys import tagged_fleet

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("mode", ["autoconnect", "native"])
def test_a_set_pref_reaches_a_running_host_without_a_new_login(lab: Lab, tmp_path: Path, mode: str) -> None:
    """In `native` mode NixOS's own `tailscaled-set` unit runs the flags (`services.tailscale.extraSetFlags`)."""
    fleet, _ = tagged_fleet(lab, tmp_path)
    host = fleet.hosts[0].name
    try:
        logins = len(logins_of(lab, host))
        fleet.write_inventory(
            **{
                host: {
                    "tailscale_advertise_tags": ["tag:server"],
                    "tailnix_mode": mode,
                    "tailscale_set": {"webclient": True, "relay-server-port": 40000, "update-check": False},
                }
            }
        )
        deployed = fleet.tailnix("deploy", "-i", "inventory.py")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        prefs = json.loads(lab.ssh(host, "tailscale debug prefs").stdout)
        assert prefs["RunWebClient"] is True
        assert prefs["RelayServerPort"] == 40000
        assert prefs["AutoUpdate"]["Check"] is False
        assert len(logins_of(lab, host)) == logins
        assert json.loads(lab.ssh(host, "tailscale status --json").stdout)["BackendState"] == "Running"
    finally:
        lab.stop_host(host)


def test_an_up_flag_in_tailscale_set_is_refused_before_any_host_is_touched(lab: Lab, tmp_path: Path) -> None:
    fleet, _ = tagged_fleet(lab, tmp_path)
    host = fleet.hosts[0].name
    try:
        fleet.write_inventory(
            **{host: {"tailscale_advertise_tags": ["tag:server"], "tailscale_set": {"ssh": True}}}
        )
        planned = fleet.tailnix("deploy", "-i", "inventory.py", "--dry")
        assert planned.returncode != 0
        assert (
            "tailscale_set = 'ssh': not a flag only tailscale set 1.90.6 has"
            in planned.stdout + planned.stderr
        )
        assert "ssh is a flag of tailscale up: use its own setting" in planned.stdout + planned.stderr
    finally:
        lab.stop_host(host)


def test_a_set_pref_the_node_refuses_fails_the_switch_which_rolls_back(lab: Lab, tmp_path: Path) -> None:
    """`tailscale set --nickname=work` where another login profile of the node is called `work`: set.go's
    `CheckPrefs` refuses it (`checkProfileNameLocked`, `ipn/ipnlocal/local.go`), so the join unit fails, the
    switch fails (switch-to-configuration exits 4 on a failed unit) and the host rolls back."""
    fleet, _ = tagged_fleet(lab, tmp_path)
    host = fleet.hosts[0].name
    try:
        # The node once logged in to a second profile, named `work` (the lab has no `tailscale login`).
        lab.ssh(
            host,
            "f=/var/lib/tailscale/tailscaled.state && jq -c '.OtherProfiles = [\"work\"]' $f > $f.new && mv $f.new $f",
        )
        before = lab.ssh(host, "cat /etc/nixos/tailscale-autoconnect.nix").stdout
        fleet.write_inventory(
            **{host: {"tailscale_advertise_tags": ["tag:server"], "tailscale_set": {"nickname": "work"}}}
        )
        deployed = fleet.tailnix("deploy", "-i", "inventory.py")
        assert deployed.returncode == 1, deployed.stdout + deployed.stderr
        said = deployed.stdout + deployed.stderr
        assert 'profile name "work" already in use' in said, said
        [row] = [line for line in deployed.stdout.splitlines() if line.startswith(f"{host} ")]
        assert "failed" in row and "nixos-rebuild switch failed" in row, row
        assert lab.ssh(host, "cat /etc/nixos/tailscale-autoconnect.nix").stdout == before
        prefs = json.loads(lab.ssh(host, "tailscale debug prefs").stdout)
        assert prefs["ProfileName"] == ""
        assert json.loads(lab.ssh(host, "tailscale status --json").stdout)["BackendState"] == "Running"
    finally:
        lab.stop_host(host)
