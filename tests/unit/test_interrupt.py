"""Ctrl-C ends a deploy with exit 130, and within a bound even when closing its connections hangs."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

CHILD = """
import time
from gevent import monkey

monkey.patch_all()  # as pyinfra's CLI does before anything else
from tailnix import interrupt

interrupt.GRACE_SECONDS = 0.5
interrupt.exit_nonzero_on_interrupt()
try:
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
except SystemExit:
    if {finishes}:
        # The interrupt landed where the run swallows it, and the run goes on to its end.
        print("finished", flush=True)
        raise SystemExit(0)
    raise
finally:
    # Ending after the interrupt, as pyinfra closes its SSH connections; when {stuck}, that never ends.
    while {stuck}:
        try:
            time.sleep(0.05)
        except BaseException:
            pass
"""


def _interrupt(stuck: bool = False, finishes: bool = False) -> subprocess.CompletedProcess[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD.format(stuck=stuck, finishes=finishes))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def test_ctrl_c_ends_the_run_with_130_and_says_so() -> None:
    ended = _interrupt(stuck=False)
    assert ended.returncode == 130
    assert ended.stderr.startswith("Interrupted: the deploy did not finish.")
    assert "had not ended" not in ended.stderr


def test_a_run_that_does_not_end_after_ctrl_c_is_ended_and_says_why() -> None:
    ended = _interrupt(stuck=True)
    assert ended.returncode == 130
    lines = ended.stderr.splitlines()
    assert lines[0].startswith("Interrupted: the deploy did not finish.")
    assert lines[-1] == (
        "Interrupted: the run had not ended 0.5s after the interrupt (closing its SSH connections); ended now. "
        "A switch under way is not confirmed, so its host rolls it back by itself."
    )


def test_a_run_that_goes_on_to_its_end_after_ctrl_c_still_exits_130() -> None:
    """What the user was told ("Interrupted") and the exit status agree, even when the run went on."""
    ended = _interrupt(finishes=True)
    assert ended.stdout == "finished\n"
    assert ended.returncode == 130
    assert ended.stderr.startswith("Interrupted: the deploy did not finish.")
