"""A reboot of a lab host: what a NixOS machine runs from power-off to `multi-user.target`.

Run inside a host: `python3 -m tailnix_lab.emulator.boot [--first-boot] [--watch-running SECONDS]`.

1. Shutdown: systemd stops every loaded unit (`tailscaled` with them: the node goes offline). `/run` is a
   tmpfs, so what the running system kept there (units' states, transient units, `/run/secrets`,
   `/run/current-system`, `/run/tailscale`, runtime directories) is gone. The lab's own plumbing in `/run`
   (sshd's directory, the lab mount, the emulator server's socket) stays: the host's sshd is the lab's way
   in and does not reboot.
   `--first-boot` also removes `/var/lib/tailscale`, as on a freshly installed disk: the node must join.
2. Stage 2 of the boot runs the activation script of the default generation (`profiles/system`, what
   `nixos-rebuild boot` or `switch` made the default): `/run/current-system`, the system profile, and
   sops-nix's `setupSecrets`, which decrypts every secret into a new `/run/secrets`. With no `/run/secrets`
   before it, no unit goes to the restart list (sops-install-secrets `handleModifications`).
3. systemd starts the boot transaction: every unit `multi-user.target` wants, and the units those
   `Wants=`/`Requires=`/`BindsTo=`, all at once. A start job waits only for the start jobs, in the same
   transaction, of the units it is ordered `After=` (or that are `Before=` it) to finish: a oneshot's job
   is done when its script has ended, a notify unit's when it said READY=1. An ordering on a unit with no
   job in the transaction (one that does not exist, as `tailscale.service` on NixOS) orders against
   nothing: systemd `man/systemd.unit.xml` (Before=/After=: a start-up is delayed "if ... both units are
   being started"; units with no ordering between them "are ... started up simultaneously"; a service's
   start-up is complete when its start-up commands "either failed or reported start-up success").

With `--watch-running`, the command polls `tailscale status --json --peers=false` every 50 ms, as a person
would, until BackendState is Running (bounded), and prints, as JSON, when tailscaled started and when
Running was first seen (both in seconds since the epoch), and the units failed at the end of the boot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

from tailnix_lab.emulator import activation, tailscaled, units
from tailnix_lab.emulator.hostroot import host_path

KEPT_IN_RUN = frozenset(
    {"sshd", "tailnix-lab", "tailnix-lab-emulator.sock", "tailnix-lab-blackhole.lock", "mount"}
)
"""What stays in `/run` across the lab's reboot: the lab's plumbing, not the emulated system's state."""
TAILSCALE_CLI = "/usr/local/sbin/tailscale"
POLL_SECONDS = 0.05
DEFAULT_WATCH_SECONDS = 60.0


class BootError(Exception):
    """The host cannot boot: it has no default generation."""


def shutdown(first_boot: bool) -> None:
    """Stop every unit, then lose `/run` as a power-off does (and the node's state with `first_boot`)."""
    for unit in units.loaded_units():
        if units.read_state(unit).get("ActiveState") in (units.ACTIVE, units.ACTIVATING):
            units.stop(unit)
    # tailscaled's unit may be unknown (a configuration without it) while its marker is left: stop it too.
    tailscaled.stop()
    run = host_path("/run")
    for entry in run.iterdir():
        if entry.name in KEPT_IN_RUN:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if first_boot:
        shutil.rmtree(host_path(tailscaled.STATE_DIR), ignore_errors=True)


def activate_default_generation() -> dict[str, units.ServiceUnit]:
    """Stage 2: the activation script of the boot default; returns the configuration's units."""
    generation = activation.default_generation()
    if generation is None:
        raise BootError("no default generation in /var/lib/tailnix-lab/profiles: nothing to boot")
    configuration = generation.configuration()["config"]
    activation.say("<<< NixOS Stage 2 >>>")
    _changed, _status = activation.run_activation_script(generation, configuration)
    configured = activation.configured_units(configuration)
    for service in configured.values():
        units.save_definition(service)
    return configured


def boot_transaction(configured: dict[str, units.ServiceUnit]) -> list[str]:
    """The units the boot starts: what `multi-user.target` wants, and what those pull in."""
    wanted = [unit for unit, service in sorted(configured.items()) if service.wanted_by_multi_user]
    queue = list(wanted)
    while queue:
        service = configured[queue.pop()]
        for other in service.list_of("wants") + service.list_of("requires") + service.list_of("bindsTo"):
            # Wants= of a unit that does not exist pulls in nothing.
            if other in configured and other not in wanted:
                wanted.append(other)
                queue.append(other)
    return wanted


def ordered_before(unit: str, transaction: list[str], configured: dict[str, units.ServiceUnit]) -> set[str]:
    """The units of the transaction whose start jobs `unit`'s start job waits for."""
    service = configured[unit]
    before = {other for other in service.list_of("after") if other in transaction}
    before |= {other for other in transaction if unit in configured[other].list_of("before")}
    before.discard(unit)
    return before


def start_transaction(configured: dict[str, units.ServiceUnit]) -> list[threading.Thread]:
    """Start every unit of the boot transaction at once, each job after the jobs it is ordered after."""
    transaction = boot_transaction(configured)
    finished = {unit: threading.Event() for unit in transaction}

    def job(unit: str) -> None:
        try:
            for other in ordered_before(unit, transaction, configured):
                # Each job is bounded by its unit's TimeoutStartSec; an ordering cycle, which systemd
                # breaks by dropping a job, is cut by this bound.
                finished[other].wait(units.DEFAULT_TIMEOUT_START_SEC)
            activation.note_missing_orderings(unit, configured[unit], configured)
            units.start(unit)
        finally:
            finished[unit].set()

    threads = [threading.Thread(target=job, args=(unit,), daemon=True) for unit in transaction]
    for thread in threads:
        thread.start()
    return threads


def backend_state() -> str:
    """BackendState as `tailscale status --json` prints it ("" when the CLI gives no answer)."""
    done = subprocess.run(
        [str(host_path(TAILSCALE_CLI)), "status", "--json", "--peers=false"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return str(json.loads(done.stdout).get("BackendState") or "")
    except ValueError:
        return ""


def watch_running(seconds: float) -> float | None:
    """When `tailscale status` first said Running, polling until then (None if not within `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if tailscaled.is_running() and backend_state() == tailscaled.RUNNING:
            return time.time()
        time.sleep(POLL_SECONDS)
    return None


def reboot(first_boot: bool, watch_seconds: float | None) -> dict[str, Any]:
    """Shut down, boot, and report (see the module's docstring)."""
    shutdown(first_boot)
    configured = activate_default_generation()
    threads = start_transaction(configured)
    running_at = watch_running(watch_seconds) if watch_seconds is not None else None
    for thread in threads:
        thread.join()
    try:
        started: float | None = tailscaled.started_at()
    except tailscaled.NotRunning:
        started = None
    return {
        "tailscaled_started": started,
        "running_seen": running_at,
        "failed_units": units.failed_units(),
    }


def main(argv: list[str]) -> int:
    """`boot [--first-boot] [--watch-running SECONDS]`: reboot this host; print what was seen, as JSON."""
    parser = argparse.ArgumentParser(prog="boot", description="Reboot this lab host.")
    parser.add_argument("--first-boot", action="store_true", help="a freshly installed disk: no node state")
    parser.add_argument("--watch-running", type=float, default=None, metavar="SECONDS")
    options = parser.parse_args(argv)
    try:
        report = reboot(options.first_boot, options.watch_running)
    except BootError as error:
        print(f"boot: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
