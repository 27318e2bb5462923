"""The states a joining node can stop in, end to end: what a user deploying sees, and what a rerun does.

Each case is a branch of the join unit (`tailnix.nixmodule`) on a real deploy: a tailnet that requires
device approval (NeedsMachineAuth), a host with no path to peers or DERP (Starting), and a node whose key
expired (NeedsLogin), as tailscale v1.90.6 `ipn/ipnlocal/local.go` (`nextStateLocked`) puts a node there.
The lab's control plane is the session's: every test gives back what it changed in it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab, LabHost

from .deploying import CONVERGED, PYINFRA, SWITCH, deploy, write_secrets

pytestmark = pytest.mark.lab

# Short waits: the join unit's `tailscale up --timeout` and the verify step's.
QUICK = {"tailnix_up_timeout": 3, "tailnix_verify_timeout": 3}


@pytest.fixture
def host(lab: Lab) -> Iterator[LabHost]:
    fresh = lab.add_host(os="nixos")
    yield fresh
    lab.stop_host(fresh.name)


@pytest.fixture
def control(lab: Lab) -> ControlPlane:
    return ControlPlane(lab.layout.control)


def _status(lab: Lab, host: str) -> dict[str, object]:
    return dict(json.loads(lab.ssh(host, "tailscale status --json --peers=false").stdout))


def _self_id(lab: Lab, host: str) -> str:
    own = _status(lab, host)["Self"]
    assert isinstance(own, dict)
    return str(own["ID"])


def _logins_of(control: ControlPlane, host: str) -> int:
    return sum(1 for login in control.logins() if login["hostname"] == host)


def test_a_node_waiting_for_approval_is_named_and_a_rerun_after_approval_verifies_running(
    lab: Lab, host: LabHost, control: ControlPlane, tmp_path: Path
) -> None:
    control.set_device_approval(True)
    try:
        secrets, _ = write_secrets(lab, tmp_path, [host], key_options={"preauthorized": False})
        inventory = lab.write_inventory(
            tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets, host_data={host.name: QUICK}
        )
        waiting = deploy(inventory)
        assert waiting.returncode == 1
        assert waiting.said(host.name, "switched, and confirmed over a new SSH connection")
        assert waiting.said(
            host.name,
            "Tailscale is NeedsMachineAuth after 3s, not Running: the node is logged in but waits for an "
            "admin to approve it in the admin console",
        )
        assert waiting.said(
            host.name, "tailscale-autoconnect: logged in; waits for an admin to approve this device"
        )
        assert _status(lab, host.name)["BackendState"] == "NeedsMachineAuth"

        control.authorize(_self_id(lab, host.name))
        approved = deploy(inventory)
        assert approved.returncode == 0, approved.stderr
        assert approved.ran(SWITCH) == set()
        assert approved.said(host.name, f"Tailscale is Running as {host.name}")
        assert _status(lab, host.name)["BackendState"] == "Running"
        # Approval needs no new login.
        assert _logins_of(control, host.name) == 1
    finally:
        control.set_device_approval(False)


def test_a_host_without_a_path_is_said_to_be_starting_and_why_and_runs_once_it_has_one(
    lab: Lab, host: LabHost, control: ControlPlane, tmp_path: Path
) -> None:
    # The host reaches control only.
    control.set_path_blocked(host.name, True)
    try:
        secrets, _ = write_secrets(lab, tmp_path, [host])
        inventory = lab.write_inventory(
            tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets, host_data={host.name: QUICK}
        )
        starting = deploy(inventory)
        assert starting.returncode == 1
        assert starting.said(host.name, "Tailscale is Starting after 3s, not Running: the node is logged in")
        assert starting.said(host.name, "no path to its peers or to a DERP relay")
        assert starting.said(host.name, "tailscale-autoconnect: logged in; no path to peers or DERP yet")
        assert _status(lab, host.name)["BackendState"] == "Starting"
        # The daemon's relay warning shows 15 s after the node was turned on: a rerun then names it.
        control.let_time_pass(16)
        still = deploy(inventory)
        assert still.returncode == 1
        assert still.said(
            host.name,
            "Tailscale is Starting after 3s, not Running: the node is logged in but has no path to its peers "
            "or to a DERP relay yet (the host must reach Tailscale's relays over HTTPS and its peers over UDP). "
            "Health: Tailscale could not connect to any relay server. Check your Internet connection.",
        )
    finally:
        control.set_path_blocked(host.name, False)
    reached = deploy(inventory)
    assert reached.returncode == 0, reached.stderr
    assert reached.said(host.name, f"Tailscale is Running as {host.name}")
    assert _logins_of(control, host.name) == 1


def test_a_running_node_that_loses_its_relay_is_reported_with_the_health_warning(
    lab: Lab, host: LabHost, control: ControlPlane, tmp_path: Path
) -> None:
    """A Running node stays Running without a path (tailscale v1.90.6 `nextStateLocked`); what is
    wrong shows in its health (`health/health.go`, `noDERPConnectionWarnable`): the deploy and
    `tailnix status` say it."""
    secrets, _ = write_secrets(lab, tmp_path, [host])
    inventory = lab.write_inventory(
        tmp_path / "inventory.py", hosts=[host.name], secrets_file=secrets, host_data={host.name: QUICK}
    )
    assert deploy(inventory).returncode == 0
    control.set_path_blocked(host.name, True)
    control.let_time_pass(16)
    try:
        rerun = deploy(inventory)
        assert rerun.returncode == 0, rerun.stderr
        assert rerun.said(
            host.name,
            f"Tailscale is Running as {host.name}",
        )
        assert rerun.said(host.name, "health: Tailscale could not connect to the 'Lab' relay server.")
        assert _status(lab, host.name)["BackendState"] == "Running"
        status = subprocess.run(
            [str(PYINFRA.parent / "tailnix"), "status", "-i", str(inventory)],
            cwd=tmp_path,
            env={**os.environ, "SOPS_AGE_KEY_FILE": str(lab.layout.admin_agekey)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 1, status.stdout + status.stderr
        assert f"{host.name}: tailscale health: Tailscale could not connect to the 'Lab' relay server." in (
            status.stderr
        )
        assert "Running" in status.stdout
    finally:
        control.set_path_blocked(host.name, False)


@pytest.mark.parametrize("mode", ["autoconnect", "native"])
def test_a_node_whose_key_expired_logs_in_again_with_the_fleets_key_on_the_rerun(
    lab: Lab, host: LabHost, control: ControlPlane, tmp_path: Path, mode: str
) -> None:
    key = control.mint_key(reusable=True)
    # NixOS's own unit (native mode) passes the file's content as the key: the secret holds it bare.
    secrets, _ = write_secrets(
        lab, tmp_path, [host], value=key if mode == "native" else f"TAILSCALE_AUTH_KEY={key}"
    )
    inventory = lab.write_inventory(
        tmp_path / "inventory.py",
        hosts=[host.name],
        secrets_file=secrets,
        host_data={host.name: {**QUICK, "tailnix_mode": mode}},
    )
    assert deploy(inventory).returncode == 0
    control.age_node_keys(days=181, node_ids=(_self_id(lab, host.name),))
    assert _status(lab, host.name)["BackendState"] == "NeedsLogin"

    rerun = deploy(inventory)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.ran(SWITCH) == set()
    assert rerun.changed(CONVERGED) == {host.name}
    unit = "tailscale-autoconnect" if mode == "autoconnect" else "tailscaled-autoconnect"
    assert rerun.said(
        host.name,
        f"Tailscale is NeedsLogin: logging in again with the fleet's key (restarting {unit}.service)",
    )
    assert rerun.said(host.name, f"Tailscale is Running as {host.name}")
    status = _status(lab, host.name)
    assert status["BackendState"] == "Running"
    assert _logins_of(control, host.name) == 2
