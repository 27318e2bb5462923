"""The drift plan on a lab host: prefs set by hand on a Running node, shown before anything is changed.

What the real system does, read in tailscale v1.90.6:
- `cmd/tailscale/cli/up.go` (`updatePrefs`): on a Running node without a new login, `up --reset` visits
  ALL of up's flags (`env.flagSet.VisitAll`) and edits every pref they govern (`prefsOfFlag`), so an
  exit node (`ExitNodeIP`) or an operator (`OperatorUser`) set with `tailscale set` goes back to its default.
- `ipn/prefs.go`: the field names `tailscale debug prefs` prints.
- The join unit runs that `up --reset` only when a switch starts or restarts it (switch-to-configuration
  restarts a unit whose definition changed, and sops-nix's `restartUnits` on a new secret): a deploy that
  switches nothing leaves the prefs as they are.

One fresh host, Running; the tests run in order: set by hand, dry run, status, a deploy that switches
nothing, a deploy that switches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tailnix_lab.hosts import Lab

from .deploying import etc_nixos
from .test_fleet import Fleet, bootstrapped_fleet

pytestmark = pytest.mark.lab

BY_HAND = (
    "ExitNodeIP 100.64.0.9 (set by hand), ExitNodeAllowLANAccess true (set by hand), "
    "OperatorUser alice (set by hand)"
)


@pytest.fixture(scope="module")
def drifted(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A fresh host, Running, then given an exit node and an operator by hand with `tailscale set`.

    With LAN access allowed: an exit node without it would cut the deployer's SSH (docs/lab.md).
    """
    directory = tmp_path_factory.mktemp("drift-fleet")
    created = bootstrapped_fleet(lab, directory)
    hosts = created.hosts
    set_by_hand = lab.ssh(
        hosts[0].name, "tailscale set --exit-node=100.64.0.9 --exit-node-allow-lan-access --operator=alice"
    )
    assert set_by_hand.returncode == 0, set_by_hand.stderr
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


def _prefs(lab: Lab, host: str) -> dict[str, Any]:
    return dict(json.loads(lab.ssh(host, "tailscale debug prefs").stdout))


def _line(output: str, host: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"{host}: "))


def _progress(output: str, host: str) -> str:
    """The deploy's line for a host that has ended: `[1/1] desk: ok, -, ...`."""
    return next(line for line in output.splitlines() if line.startswith("[") and f"] {host}: " in line)


def test_dry_run_lists_the_prefs_set_by_hand_and_changes_nothing(drifted: Fleet, lab: Lab) -> None:
    name = drifted.hosts[0].name
    before = etc_nixos(lab, name)

    dry = drifted.tailnix("deploy", "-i", "inventory.py", "--dry")

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert _line(dry.stdout, name) == (
        f"{name}: nothing to do; drift: {BY_HAND}: kept, since nothing needs a switch here and only a switch "
        "runs the join unit's `tailscale up --reset` (to keep a pref set by hand, make it a setting "
        "(tailscale_extra_up_flags))"
    )
    assert etc_nixos(lab, name) == before
    prefs = _prefs(lab, name)
    assert (prefs["ExitNodeIP"], prefs["OperatorUser"]) == ("100.64.0.9", "alice")


def test_status_json_has_the_drift(drifted: Fleet) -> None:
    name = drifted.hosts[0].name
    status = drifted.tailnix("status", "-i", "inventory.py", "--json")
    document = json.loads(status.stdout)
    assert document["schema"] == 1
    (host,) = document["hosts"]
    assert host["drift"] == [
        {"pref": "ExitNodeIP", "value": "100.64.0.9", "wanted": "", "setting": None},
        {"pref": "ExitNodeAllowLANAccess", "value": True, "wanted": False, "setting": None},
        {"pref": "OperatorUser", "value": "alice", "wanted": "", "setting": None},
    ]
    table = drifted.tailnix("status", "-i", "inventory.py")
    assert f"{name}: drift: {BY_HAND}: the next switch's `tailscale up --reset` sets them" in table.stderr


def test_a_deploy_that_switches_nothing_keeps_them_and_says_so(drifted: Fleet, lab: Lab) -> None:
    name = drifted.hosts[0].name
    deployed = drifted.tailnix("deploy", "-i", "inventory.py")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert f"drift: {BY_HAND}: kept, since nothing needs a switch here" in _progress(deployed.stdout, name)
    prefs = _prefs(lab, name)
    assert (prefs["ExitNodeIP"], prefs["OperatorUser"]) == ("100.64.0.9", "alice")


def test_a_deploy_that_switches_clears_them_as_the_dry_run_said(drifted: Fleet, lab: Lab) -> None:
    name = drifted.hosts[0].name
    drifted.write_inventory(**{name: {"tailscale_ssh": True}})

    dry = drifted.tailnix("deploy", "-i", "inventory.py", "--dry")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    line = _line(dry.stdout, name)
    assert "nixos-rebuild switch" in line
    assert (
        "drift: ExitNodeIP 100.64.0.9 (set by hand) would be cleared by the deploy; "
        "ExitNodeAllowLANAccess true (set by hand) would be cleared by the deploy; "
        "RunSSH false (tailscale_ssh wants true) would be set to true by the deploy; "
        "OperatorUser alice (set by hand) would be cleared by the deploy"
    ) in line
    # pyinfra's own dry run says it for the host too.
    plain = drifted.pyinfra_dry()
    assert plain.returncode == 0, plain.stderr
    assert (
        f"[{name}] drift: ExitNodeIP 100.64.0.9 (set by hand) would be cleared" in plain.stdout + plain.stderr
    )
    assert _prefs(lab, name)["OperatorUser"] == "alice"

    deployed = drifted.tailnix("deploy", "-i", "inventory.py")

    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert (
        "drift: ExitNodeIP 100.64.0.9 (set by hand) cleared, ExitNodeAllowLANAccess true (set by hand) cleared, "
        "OperatorUser alice (set by hand) cleared" in _progress(deployed.stdout, name)
    )
    prefs = _prefs(lab, name)
    assert (prefs["ExitNodeIP"], prefs["OperatorUser"], prefs["RunSSH"]) == ("", "", True)
    status = json.loads(drifted.tailnix("status", "-i", "inventory.py", "--json").stdout)
    assert status["hosts"][0]["drift"] == []
