"""An interrupted deploy is not a success.

pyinfra's CLI answers Ctrl-C (SIGINT) with "Exiting upon user request!" and exit status 0
(`pyinfra_cli/main.py`, `_handle_interrupt`), so a script could not tell an interrupted deploy from a
finished one. The deploy replaces that handler with one that says what the interruption means for the
hosts and exits 130, the shell's status for a command ended by SIGINT.

Ending is bounded: pyinfra then closes its SSH connections, which under gevent can wait on a transfer that
never finishes. If the run has not ended `GRACE_SECONDS` after the interrupt, a plain OS thread (not a
greenlet, so it runs whatever the event loop is doing) says so and ends the process with the same status.
A switch under way is not harmed by that: the host confirms nothing without the deployer and rolls back.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

INTERRUPTED_EXIT = 130
GRACE_SECONDS = 15.0
"""How long an interrupted run may take to close its connections before it is ended anyway."""


def _unpatched(module: str, name: str) -> Any:
    """The standard library's own `module.name`, even where gevent has patched it (as pyinfra's CLI does)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent comes with pyinfra
        return getattr(importlib.import_module(module), name)
    return monkey.get_original(module, name)


def _exit_interrupted() -> None:
    """At exit, whatever the run did after the interrupt: the status is the interrupt's, as was said."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(INTERRUPTED_EXIT)


def _end_after(seconds: float) -> None:
    sleep: Callable[[float], None] = _unpatched("time", "sleep")
    sleep(seconds)
    os.write(
        2,
        f"Interrupted: the run had not ended {seconds:g}s after the interrupt (closing its SSH connections); "
        "ended now. A switch under way is not confirmed, so its host rolls it back by itself.\n".encode(),
    )
    os._exit(INTERRUPTED_EXIT)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    print(
        "Interrupted: the deploy did not finish. Each host is on its old configuration or its new one; "
        "run the same deploy again to complete it.",
        file=sys.stderr,
        flush=True,
    )
    # Under gevent the SystemExit below can land in a greenlet whose run then goes on to the end; the exit
    # status is the interrupt's all the same, since that is what the user was told.
    atexit.unregister(_exit_interrupted)
    atexit.register(_exit_interrupted)
    start_thread = _unpatched("_thread", "start_new_thread")
    start_thread(_end_after, (GRACE_SECONDS,))
    sys.exit(INTERRUPTED_EXIT)


def exit_nonzero_on_interrupt() -> None:
    """From now on, Ctrl-C ends the run with exit status 130 instead of pyinfra's 0 (main thread only)."""
    # Outside the main thread (pyinfra driven from a library) the caller owns the signals.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, _interrupted)
