"""host_scripts/switch-wait.sh: the host's wait for its switch job, with a stand-in `systemctl`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tailnix import host_scripts

TOKEN = "abc123"


def _wait(tmp_path: Path, line: str, unit_state: str, wait: int = 3) -> str:
    """What switch-wait.sh prints for a result file saying `line`, the job's unit being `unit_state`."""
    result = tmp_path / "result"
    result.write_text(f"{line}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f"#!/bin/sh\necho {unit_state}\n[ {unit_state} = active ]\n")
    systemctl.chmod(0o755)
    done = subprocess.run(
        ["sh", "-c", host_scripts.command("switch-wait.sh", str(result), TOKEN, wait, "tailnix-switch")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    return done.stdout.strip()


def test_a_job_whose_unit_ended_while_it_says_running_is_gone(tmp_path: Path) -> None:
    assert _wait(tmp_path, f"running {TOKEN}", "inactive") == f"gone {TOKEN}"
    assert _wait(tmp_path, f"running {TOKEN}", "failed") == f"gone {TOKEN}"


def test_a_job_still_at_work_is_waited_for_until_the_window_ends(tmp_path: Path) -> None:
    # Activating (started) or deactivating (being stopped): not ended yet.
    assert _wait(tmp_path, f"running {TOKEN}", "active", wait=2) == f"running {TOKEN}"
    assert _wait(tmp_path, f"running {TOKEN}", "deactivating", wait=2) == f"running {TOKEN}"


def test_a_final_result_is_printed_whatever_the_unit(tmp_path: Path) -> None:
    assert _wait(tmp_path, f"confirmed {TOKEN}", "inactive") == f"confirmed {TOKEN}"
    assert _wait(tmp_path, f"running {TOKEN}9", "inactive") == f"running {TOKEN}9"
