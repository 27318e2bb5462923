"""An interrupted deploy is not a success.

pyinfra's CLI answers Ctrl-C (SIGINT) with "Exiting upon user request!" and exit status 0
(`pyinfra_cli/main.py`, `_handle_interrupt`), so a script could not tell an interrupted deploy from a
finished one. The deploy replaces that handler with one that says what the interruption means for the
hosts and exits 130, the shell's status for a command ended by SIGINT.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from types import FrameType

INTERRUPTED_EXIT = 130


def _interrupted(signum: int, frame: FrameType | None) -> None:
    print(
        "Interrupted: the deploy did not finish. Each host is on its old configuration or its new one; "
        "run the same deploy again to complete it.",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(INTERRUPTED_EXIT)


def exit_nonzero_on_interrupt() -> None:
    """From now on, Ctrl-C ends the run with exit status 130 instead of pyinfra's 0 (main thread only)."""
    # Outside the main thread (pyinfra driven from a library) the caller owns the signals.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, _interrupted)
