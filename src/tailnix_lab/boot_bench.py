"""Boot to Running: how long after tailscaled starts a freshly installed host is on the tailnet.

`tailnix bench --boot` adds three hosts to the bench's lab, one per way of joining at boot, and reboots
each of them as a first boot (`emulator/boot.py`: shutdown, no node state on disk, stage 2's activation,
then systemd's boot transaction), several times, the three in turn, and prints the median time from
tailscaled's start to the first `tailscale status` that says Running:

- `autoconnect`: tailnix's own unit (the default module), ordered after `tailscaled.service`;
- `native`: `tailnix_mode = "native"`, NixOS's `services.tailscale.authKeyFile` and its
  `tailscaled-autoconnect` unit (nixpkgs `nixos/modules/services/networking/tailscale.nix`);
- `seed`: the recipe of the blog post tailnix started from, in the lab only: a oneshot ordered after
  `tailscale.service` (no such unit on NixOS, so it is ordered after nothing), `sleep 2`, then
  `tailscale up -authkey KEY` with the key in the unit's script (so in the Nix store, in clear).

The first two are deployed by the real deploy (pyinfra, `deploys/tailscale.py`) with a secrets file of
their own; the third is written by hand and switched with `nixos-rebuild`, as the post says.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tailnix.agekey import ssh_public_key_to_age
from tailnix.nix_imports import add_import
from tailnix.sops import encrypt_values
from tailnix_lab import demo
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab
from tailnix_lab.layout import HOST_LAB_MOUNT, LabError, LabHost

MODES = ("autoconnect", "native", "seed")
WATCH_SECONDS = 60.0
"""How long a boot may take to reach Running before the bench gives up on it."""
SEED_MODULE = "/etc/nixos/seed-autoconnect.nix"
PYINFRA = Path(sys.executable).parent / "pyinfra"
DEPLOY = Path("deploys") / "tailscale.py"


class BootBenchError(RuntimeError):
    """A boot did not reach Running, or a host could not be set up for it."""


@dataclass(frozen=True)
class Boot:
    """One reboot of one host: tailscaled's start and the first Running seen, epoch seconds."""

    mode: str
    host: str
    tailscaled_started: float
    running_seen: float

    @property
    def seconds(self) -> float:
        """From tailscaled's start to Running."""
        return self.running_seen - self.tailscaled_started


@dataclass
class BootResults:
    """Every boot measured, by mode."""

    rounds: int
    boots: list[Boot] = field(default_factory=list)

    def seconds(self, mode: str) -> list[float]:
        """The boots of one mode, in seconds, in the order they ran."""
        return [boot.seconds for boot in self.boots if boot.mode == mode]

    def median(self, mode: str) -> float:
        """The median of one mode."""
        return statistics.median(self.seconds(mode))


def seed_module(auth_key: str) -> str:
    """The seed post's NixOS module (tailscale's "Tailscale on NixOS" recipe), with a lab key."""
    return f"""\
# The seed post's recipe: written by `tailnix bench --boot` on a lab host only (the key is in clear).
{{ config, lib, pkgs, ... }}:

{{
  services.tailscale.enable = true;

  systemd.services.tailscale-autoconnect = {{
    description = "Automatic connection to Tailscale";

    # make sure tailscale is running before trying to connect to tailscale
    after = [ "network-pre.target" "tailscale.service" ];
    wants = [ "network-pre.target" "tailscale.service" ];
    wantedBy = [ "multi-user.target" ];

    # set this service as a oneshot job
    serviceConfig.Type = "oneshot";

    # have the job run this shell script
    script = with pkgs; ''
      # wait for tailscaled to settle
      sleep 2

      # check if we are already authenticated to tailscale
      status="$(${{tailscale}}/bin/tailscale status -json | ${{jq}}/bin/jq -r .BackendState)"
      if [ $status = "Running" ]; then # if so, then do nothing
        exit 0
      fi

      # otherwise authenticate with tailscale
      ${{tailscale}}/bin/tailscale up -authkey {auth_key}
    '';
  }};
}}
"""


def reboot_host(lab: Lab, name: str, *, first_boot: bool, watch_seconds: float | None) -> dict[str, object]:
    """Reboot one lab host (`emulator/boot.py`) over SSH; return what it printed."""
    arguments = ["--first-boot"] if first_boot else []
    if watch_seconds is not None:
        arguments += ["--watch-running", str(watch_seconds)]
    command = (
        f"PYTHONPATH={HOST_LAB_MOUNT}/pylib /usr/bin/python3 -m tailnix_lab.emulator.boot "
        + shlex.join(arguments)
    )
    done = lab.ssh(name, command, check=False)
    if done.returncode != 0:
        raise BootBenchError(f"{name}: the reboot failed (exit {done.returncode}): {done.stderr.strip()}")
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _write_secrets(lab: Lab, hosts: Sequence[LabHost], directory: Path, auth_key: str) -> Path:
    """A secrets file with the bare key (NixOS's own unit reads the file as the key) for the admin and `hosts`."""
    admin = subprocess.run(
        ["age-keygen", "-y", str(lab.layout.admin_agekey)], capture_output=True, text=True, check=True
    ).stdout.strip()
    recipients = {demo.ADMIN_ANCHOR: admin}
    recipients |= {host.name: ssh_public_key_to_age(host.host_key_public) for host in hosts}
    config = directory / ".sops.yaml"
    config.write_text(demo.render_sops_config(recipients))
    secrets = directory / "secrets" / "tailscale.yaml"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    encrypt_values(
        {demo.AUTH_KEY_SECRET: auth_key}, target=secrets, config=config, age_key_file=lab.layout.admin_agekey
    )
    return secrets


def _deploy(inventory: Path, repository: Path) -> None:
    environment = {**os.environ, "PYINFRA_YES": "1"}
    source = repository / "src"
    if source.is_dir():
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [str(PYINFRA), "-y", str(inventory), str(DEPLOY)],
        cwd=repository,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BootBenchError(f"the deploy to the boot hosts exited {done.returncode}:\n{tail}")


def _install_seed(lab: Lab, host: str, auth_key: str) -> None:
    lab.ssh(host, f"cat > {SEED_MODULE}", input=seed_module(auth_key))
    configuration = lab.ssh(host, "cat /etc/nixos/configuration.nix").stdout
    lab.ssh(
        host,
        "cat > /etc/nixos/configuration.nix",
        input=add_import(configuration, "./" + SEED_MODULE.rsplit("/", 1)[1]),
    )
    # The boot default; the bench's first reboot runs it. (A switch would start the unit too, but the lab's
    # switch starts new units one after another, so the unit's `sleep 2` would end before tailscaled starts.)
    done = lab.ssh(host, "nixos-rebuild boot", check=False)
    if done.returncode != 0:
        raise BootBenchError(f"{host}: nixos-rebuild boot of the seed recipe exited {done.returncode}")


def set_up_hosts(lab: Lab, repository: Path, directory: Path) -> dict[str, str]:
    """Add one host per mode to the lab and give each its way of joining; returns mode -> host name."""
    hosts = {mode: lab.add_host(os="nixos") for mode in MODES}
    control = ControlPlane(lab.layout.control)
    # Reusable: every reboot of the bench is a new join with the same key.
    auth_key = control.mint_key(reusable=True, expiry_days=1)
    secrets = _write_secrets(lab, [hosts["autoconnect"], hosts["native"]], directory, auth_key)
    inventory = lab.write_inventory(
        directory / "inventory.py",
        hosts=[hosts["autoconnect"].name, hosts["native"].name],
        secrets_file=secrets,
        host_data={hosts["native"].name: {"tailnix_mode": "native"}},
    )
    _deploy(inventory, repository)
    _install_seed(lab, hosts["seed"].name, auth_key)
    return {mode: host.name for mode, host in hosts.items()}


def _forget_node(lab: Lab, host: str) -> None:
    """Delete the host's node at control, as an admin removes a reinstalled machine's old device."""
    status = lab.ssh(host, "tailscale status --json --peers=false", check=False).stdout
    try:
        node_id = (json.loads(status).get("Self") or {}).get("ID")
    except ValueError:
        node_id = None
    if node_id:
        ControlPlane(lab.layout.control).delete_node(str(node_id))


def measure(lab: Lab, hosts: dict[str, str], rounds: int) -> BootResults:
    """Reboot each mode's host `rounds` times as a first boot, the modes in turn; time boot to Running."""
    results = BootResults(rounds=rounds)
    for number in range(1, rounds + 1):
        for mode in MODES:
            name = hosts[mode]
            _forget_node(lab, name)
            report = reboot_host(lab, name, first_boot=True, watch_seconds=WATCH_SECONDS)
            started, seen = report.get("tailscaled_started"), report.get("running_seen")
            if not isinstance(started, float) or not isinstance(seen, float):
                journal = lab.ssh(name, "journalctl --no-pager -n 30", check=False).stdout
                raise BootBenchError(
                    f"{name} ({mode}): not Running within {WATCH_SECONDS:.0f} s of its boot "
                    f"(tailscaled started: {started}; failed units: {report.get('failed_units')})\n{journal}"
                )
            boot = Boot(mode, name, started, seen)
            results.boots.append(boot)
            print(f"  [boot {number}/{rounds}] {mode}: {boot.seconds:.2f} s", file=sys.stderr)
    return results


def render_boot_report(results: BootResults) -> str:
    """The table of the three joins, then the line for scripts."""
    lines = [
        "",
        f"boot to Running: from tailscaled's start to the first `tailscale status` that says Running, "
        f"first boot of a fresh host, {results.rounds} boots each; median (min-max)",
    ]
    for mode in MODES:
        values = results.seconds(mode)
        lines.append(
            f"    {mode:<12} {statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})"
        )
    lines += [
        "",
        "boot_to_running_seconds: " + " ".join(f"{mode}={results.median(mode):.2f}" for mode in MODES),
    ]
    return "\n".join(lines)


def run_boot_bench(lab: Lab, repository: Path, rounds: int) -> BootResults:
    """Set the three hosts up in the lab and measure them (they stay in the lab, which the bench stops)."""
    directory = lab.directory / "boot"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        hosts = set_up_hosts(lab, repository, directory)
    except LabError as error:
        raise BootBenchError(f"cannot set up the boot hosts: {error}") from None
    return measure(lab, hosts, rounds)
