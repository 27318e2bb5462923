"""The benchmark runs end to end on a small lab; its figures are printed, never asserted on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tailnix_lab.hosts import lab_mounts

from .deploying import REPOSITORY

pytestmark = pytest.mark.lab

TAILNIX = Path(sys.executable).parent / "tailnix"


def run_bench(lab_directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`tailnix bench` on a 2-host lab in `lab_directory`, one round, from the repository root."""
    return subprocess.run(
        [str(TAILNIX), "bench", "--hosts", "2", "--rounds", "1", "--dir", str(lab_directory), *options],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_bench_prints_the_table_and_machine_readable_lines(tmp_path: Path) -> None:
    lab_directory = tmp_path / "bench-lab"
    result = run_bench(lab_directory)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in ("(a) floor", "(b) no-op redeploy", "(c) first deploy", "ratio (b)/(a)"):
        assert row in out
    assert re.search(r"^ratio_noop_vs_floor: \d+\.\d+$", out, re.MULTILINE)
    assert re.search(r"^hosts: 2$", out, re.MULTILINE)
    assert re.search(r"^ssh_commands_per_host: [1-9]\d*$", out, re.MULTILINE)
    assert re.search(r"^max_rss_mib: \d+\.\d$", out, re.MULTILINE)
    for key in ("floor_max_rss_mib", "noop_max_rss_mib", "first_deploy_ms_per_host"):
        assert re.search(rf"^{key}: \d+\.\d$", out, re.MULTILINE), key
    # Every command of the no-op redeploy replays on a host as pyinfra sent it (none fails).
    replayed = out.split("each command of (b) replayed", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert replayed
    assert not [line for line in replayed if line.split()[0] == "failed"], replayed
    # The bench's lab is gone when it ends: no host left running, nothing left mounted.
    assert lab_mounts(lab_directory) == []
    hosts = subprocess.run(
        [str(TAILNIX), "lab", "status", "--dir", str(lab_directory)], capture_output=True, text=True
    ).stdout
    assert "running" not in hosts.split("STATE", 1)[-1]


def test_bench_with_ansible_runs_the_same_steps_as_a_playbook_that_changes_nothing(tmp_path: Path) -> None:
    """The Ansible peer (`--ansible`) runs beside the no-op redeploy; on the fleet tailnix converged, its
    copy, lineinfile and command tasks find nothing to change, in its first run and in every run after."""
    lab_directory = tmp_path / "bench-lab"
    result = run_bench(lab_directory, "--ansible")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^\(d\) Ansible, the same steps, no-op +\d+\.\d\d s .* MiB$", out, re.MULTILINE)
    assert re.search(r"^ratio \(d\)/\(b\), medians: \d+\.\d\d$", out, re.MULTILINE)
    assert re.search(r"^ratio_ansible_vs_noop: \d+\.\d+$", out, re.MULTILINE)
    assert re.search(r"^ratio_ansible_vs_noop_cpu: \d+\.\d+$", out, re.MULTILINE)
    assert re.search(r"^ansible_noop_seconds: \d+\.\d+$", out, re.MULTILINE)
    # The untimed first run and the timed one: nothing changed on either host.
    assert re.search(r"^ansible_changed_per_run: 0,0$", out, re.MULTILINE)
    # The playbook and its inventory were written in the bench's lab directory, with forks for every host.
    config = (lab_directory / "ansible" / "ansible.cfg").read_text()
    assert "forks = 2" in config and "pipelining = True" in config
    assert "StrictHostKeyChecking=yes" in config
    assert lab_mounts(lab_directory) == []


def test_bench_with_boot_prints_boot_to_running_of_the_three_joins(tmp_path: Path) -> None:
    """`--boot` reboots three more hosts as first boots, each joining its own way (tailnix's unit, NixOS's
    `tailscaled-autoconnect`, the seed recipe): every boot reached Running, or the bench would have failed."""
    lab_directory = tmp_path / "bench-lab"
    result = run_bench(lab_directory, "--boot")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for mode in ("autoconnect", "native", "seed"):
        assert re.search(rf"^    {mode} +\d+\.\d\d s \(\d+\.\d\d-\d+\.\d\d\)$", out, re.MULTILINE)
    assert re.search(
        r"^boot_to_running_seconds: autoconnect=\d+\.\d\d native=\d+\.\d\d seed=\d+\.\d\d$", out, re.MULTILINE
    )
    assert lab_mounts(lab_directory) == []


def test_bench_removes_the_lab_it_made(tmp_path: Path) -> None:
    # Without --dir the bench makes its lab under the temporary directory, and removes all of it.
    result = subprocess.run(
        [str(TAILNIX), "bench", "--hosts", "1", "--rounds", "1"],
        cwd=REPOSITORY,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"lab of 1 hosts up in {tmp_path}/tailnix-bench-" in result.stderr
    assert list(tmp_path.iterdir()) == []
