"""Never strand a host: magic rollback when a switch cuts SSH, and deploys killed halfway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailnix import steps
from tailnix_lab.hosts import Lab, LabHost

from .deploying import SUDO_USER, SWITCH, deploy, etc_nixos, start_deploy, write_secrets

pytestmark = pytest.mark.lab


@pytest.fixture(params=[None, SUDO_USER], ids=["root", "sudo"])
def joined(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[LabHost, Path]]:
    """A fresh host, deployed once and Running, with the secrets file it was deployed with.

    Reached as root, or as a non-root admin with sudo.
    """
    host = lab.add_host(os="nixos", sudo_user=request.param)
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [host])
    run = deploy(lab.write_inventory(tmp_path / "first.py", hosts=[host.name], secrets_file=secrets))
    assert run.returncode == 0, run
    yield host, secrets
    lab.stop_host(host.name)


def _prefs(lab: Lab, name: str) -> dict[str, object]:
    return dict(json.loads(lab.ssh(name, "tailscale debug prefs").stdout))


def _wait_for(predicate: object, what: str, limit: float = 90.0) -> None:
    """Poll (bounded) until `predicate()` holds; the host's own timers decide, not the test."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"never happened: {what}")


def test_a_switch_that_cuts_ssh_is_rolled_back_by_the_host_itself(
    lab: Lab, joined: tuple[LabHost, Path], tmp_path: Path
) -> None:
    host, secrets = joined
    before = etc_nixos(lab, host.name)
    generation = lab.ssh(host.name, "readlink /run/current-system").stdout
    # Routing everything through an exit node cuts the deployer's own path to the host.
    exit_node = "100.64.0.254"
    cutting = lab.write_inventory(
        tmp_path / "cutting.py",
        hosts=[host.name],
        secrets_file=secrets,
        host_data={
            host.name: {
                "tailscale_extra_up_flags": [f"--exit-node={exit_node}"],
                "tailnix_confirm_timeout": 6,
            }
        },
    )
    run = deploy(cutting)
    assert run.returncode != 0
    assert run.said(host.name, "rolled back: no confirmation over a new SSH connection within 6s")
    assert run.said(host.name, "/etc/nixos restored")
    # The host came back by itself: reachable, the old generation, the old files, no exit node.
    assert etc_nixos(lab, host.name) == before
    assert lab.ssh(host.name, "readlink /run/current-system").stdout != ""
    assert not _prefs(lab, host.name).get("ExitNodeIP")
    assert (
        json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)["BackendState"]
        == "Running"
    )
    del generation


def _fresh_inventory(lab: Lab, host: LabHost, tmp_path: Path) -> Path:
    """An inventory of `host` alone, with a secrets file for it and a short confirmation timeout."""
    secrets, _ = write_secrets(lab, tmp_path / "fleet", [host])
    return lab.write_inventory(
        tmp_path / "inventory.py",
        hosts=[host.name],
        secrets_file=secrets,
        host_data={host.name: {"tailnix_confirm_timeout": 3}},
    )


def _wait_for_the_switch_job(lab: Lab, name: str) -> None:
    """A switch the deployer started goes on without it; wait until the host has ended it."""
    _wait_for(
        lambda: lab.ssh(name, "systemctl is-active tailnix-switch", check=False).stdout.strip() != "active",
        "the detached switch ended",
    )


def _kill_when(process: subprocess.Popen[str], marker: str, signal_number: int) -> tuple[str, int]:
    """Signal the deployer as soon as its output shows `marker`; what it printed, and its exit status."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            process.send_signal(signal_number)
            break
    try:
        seen.append(process.communicate(timeout=60)[1])
    except subprocess.TimeoutExpired:
        # As a person would after a Ctrl-C that did not stop it: kill it.
        process.kill()
        seen.append(process.communicate(timeout=60)[1])
    return "".join(seen), process.returncode


@pytest.mark.parametrize(
    ("marker", "signal_number", "sudo_user"),
    [
        (steps.SECRETS_FILE, signal.SIGINT, None),
        (steps.MODULE_FILE, signal.SIGKILL, None),
        (steps.IMPORT, signal.SIGKILL, None),
        (f"--> Starting operation: {steps.SWITCH}", signal.SIGKILL, None),
        (f"--> Starting operation: {steps.SWITCH}", signal.SIGINT, None),
        (steps.SECRETS_FILE, signal.SIGINT, SUDO_USER),
        (f"--> Starting operation: {steps.SWITCH}", signal.SIGKILL, SUDO_USER),
    ],
    ids=[
        "secret-SIGINT",
        "module-SIGKILL",
        "import-SIGKILL",
        "switch-SIGKILL",
        "switch-SIGINT",
        "sudo-secret-SIGINT",
        "sudo-switch-SIGKILL",
    ],
)
def test_a_killed_deploy_leaves_old_or_new_and_the_next_run_completes(
    lab: Lab, marker: str, signal_number: int, sudo_user: str | None, tmp_path: Path
) -> None:
    host = lab.add_host(os="nixos", sudo_user=sudo_user)
    try:
        inventory = _fresh_inventory(lab, host, tmp_path)
        old = etc_nixos(lab, host.name)
        printed, status = _kill_when(start_deploy(inventory), marker, signal_number)
        assert marker in printed
        if signal_number == signal.SIGINT:
            # Ctrl-C is not success: pyinfra alone would have said "Exiting upon user request!" and exit 0.
            assert status == 130, printed
            assert "Interrupted: the deploy did not finish" in printed
        else:
            assert status == -signal_number
        # A switch the deployer started goes on without it, and without a confirmation it rolls back.
        _wait_for_the_switch_job(lab, host.name)
        configuration = lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
        lab.ssh(host.name, "nix-instantiate --parse /etc/nixos/configuration.nix > /dev/null")
        assert configuration.count("./tailscale-autoconnect.nix") <= 1
        pending = lab.ssh(host.name, "test -d /var/lib/tailnix/pending && echo kept || true").stdout.strip()
        applied = lab.ssh(host.name, "cat /var/lib/tailnix/applied 2>/dev/null || true").stdout.strip()
        if etc_nixos(lab, host.name) != old:
            # The new files: either kept aside for a restore (not switched yet), or switched and confirmed
            # (the signal came after the confirmation).
            assert pending == "kept" or applied, "new files, but neither pending nor a confirmed switch"
        run = deploy(inventory)
        assert run.returncode == 0, run
        assert run.changed(SWITCH) == (set() if applied and not pending else {host.name})
        status = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)
        assert status["BackendState"] == "Running"
    finally:
        lab.stop_host(host.name)


def test_ctrl_c_on_tailnix_deploy_exits_130_and_the_next_run_completes(lab: Lab, tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group: `tailnix deploy` and the pyinfra it runs.

    The command must not report it as an ordinary failure (exit 1) or a success: it says the deploy was
    interrupted and exits 130, as `pyinfra` with the deploy file does (tailnix.interrupt).
    """
    host = lab.add_host(os="nixos")
    try:
        inventory = _fresh_inventory(lab, host, tmp_path)
        tailnix = Path(sys.executable).parent / "tailnix"
        process = subprocess.Popen(
            [str(tailnix), "deploy", "-i", str(inventory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if f"{host.name}: {steps.SWITCH} ..." in line:
                os.killpg(process.pid, signal.SIGINT)
                break
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        printed = "".join(seen) + out + err
        assert process.returncode == 130, printed
        assert "Interrupted: the deploy did not finish" in err
        # Where the interrupt landed decides whether the host got its switch before the run ended.
        assert "1 host deployed: " in printed
        _wait_for_the_switch_job(lab, host.name)
        run = deploy(inventory)
        assert run.returncode == 0, run
        state = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)
        assert state["BackendState"] == "Running"
    finally:
        lab.stop_host(host.name)


ROUTE = "10.9.0.0/24"
# Where to kill the deployer: (the line of its output, what must hold on the host before the kill).
KILL_POINTS = {
    "preflight": (f"--> Starting operation: {steps.PREFLIGHT}", None),
    "secret": (f"--> Starting operation: {steps.SECRETS_FILE}", None),
    "module": (f"--> Starting operation: {steps.MODULE_FILE}", None),
    "import": (f"--> Starting operation: {steps.IMPORT}", None),
    # The switch has activated the new configuration and waits for the confirmation: the worst moment,
    # since the host then rolls itself back while the next deploy is already reading it.
    "switch": (f"--> Starting operation: {steps.SWITCH}", "switched"),
    "verify": (f"--> Starting operation: {steps.VERIFY}", None),
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_deploy_killed_at_any_step_converges_in_one_rerun(
    lab: Lab, joined: tuple[LabHost, Path], tmp_path: Path, point: str
) -> None:
    """A route added to a Running host; the deploy that adds it is killed (SIGKILL) at `point`, and the
    very next run, started at once, ends with exit 0 and the host on the new configuration, Running with
    the route; the run after it changes nothing."""
    host, secrets = joined
    inventory = lab.write_inventory(
        tmp_path / "route.py",
        hosts=[host.name],
        secrets_file=secrets,
        host_data={host.name: {"tailscale_advertise_routes": [ROUTE], "tailnix_confirm_timeout": 5}},
    )
    marker, wanted = KILL_POINTS[point]
    process = start_deploy(inventory)
    assert process.stderr is not None
    for line in process.stderr:
        if marker in line:
            break
    else:
        raise AssertionError(f"the deploy never printed {marker!r}")
    if wanted is None:
        process.kill()
    else:
        # The confirmation comes over a new SSH connection: the host's sshd stops taking new ones (its
        # sessions go on) until the deployer is dead, so the kill always lands before the confirmation.
        result = Path(f"/proc/{host.pid}/root/var/lib/tailnix/switch/result")
        os.kill(host.pid, signal.SIGSTOP)
        try:
            _wait_for(
                lambda: result.exists() and result.read_text().startswith(wanted),
                f"the switch on the host reached {wanted!r}",
            )
            process.kill()
        finally:
            os.kill(host.pid, signal.SIGCONT)
    process.communicate(timeout=60)

    rerun = deploy(inventory)
    assert rerun.returncode == 0, rerun
    if point == "switch":
        # The rerun read the host only once the orphaned switch had rolled back, and says so.
        assert rerun.said(host.name, "for an earlier deploy's switch to end (rolled-back: no confirmation"), (
            rerun
        )
    assert _prefs(lab, host.name).get("AdvertiseRoutes") == [ROUTE]
    status = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)
    assert status["BackendState"] == "Running"
    settled = deploy(inventory)
    assert settled.returncode == 0, settled
    assert settled.changed(SWITCH) == set(), settled


# A oneshot unit whose start takes a while: the switch waits for it (switch-to-configuration starts the
# units multi-user.target wants, one after another), so the switch job is still at work when it is stopped.
SLOW_START = (
    '  systemd.services.slow-start = { wantedBy = [ "multi-user.target" ]; '
    'serviceConfig.Type = "oneshot"; script = "sleep 20"; };\n'
)


def test_a_switch_job_stopped_on_the_host_fails_the_deploy_and_the_next_run_completes(
    lab: Lab, tmp_path: Path
) -> None:
    """`systemctl stop tailnix-switch` (or the OOM killer) ends the job before it writes its result: the
    deploy says so at once instead of waiting for the switch's whole allowance, and the next one switches."""
    host = lab.add_host(os="nixos")
    try:
        configuration = lab.ssh(host.name, "cat /etc/nixos/configuration.nix").stdout
        anchor = "  boot.loader.systemd-boot.enable = true;\n"
        assert anchor in configuration
        lab.ssh(
            host.name,
            "cat > /etc/nixos/configuration.nix",
            input=configuration.replace(anchor, anchor + SLOW_START),
        )
        inventory = _fresh_inventory(lab, host, tmp_path)
        process = start_deploy(inventory)
        printed: list[str] = []
        reader = threading.Thread(target=lambda: printed.extend(process.stderr or ()), daemon=True)
        reader.start()
        result = "cat /var/lib/tailnix/switch/result 2>/dev/null || true"
        _wait_for(
            lambda: lab.ssh(host.name, result).stdout.startswith("running "),
            "the switch job is running",
            limit=180,
        )
        lab.ssh(host.name, "systemctl stop tailnix-switch")
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        reader.join(timeout=60)
        output = "".join(printed)
        assert process.returncode != 0, output
        assert "the switch job (tailnix-switch) ended without a result" in output, output
        assert "this deploy did not confirm the switch" in output, output
        assert "did not finish within" not in output, output
        # Stopped before it could write more: the host's result still names the stopped job.
        assert lab.ssh(host.name, result).stdout.startswith("running ")

        run = deploy(inventory)
        assert run.returncode == 0, run
        assert run.said(host.name, "an earlier deploy's switch (tailnix-switch) ended without a result"), run
        assert run.changed(SWITCH) == {host.name}
        status = json.loads(lab.ssh(host.name, "tailscale status --json --peers=false").stdout)
        assert status["BackendState"] == "Running"
    finally:
        lab.stop_host(host.name)
