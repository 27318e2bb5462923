"""The lab's stand-in Tailscale API as a background service of the lab: started by `lab up`, stopped by
`lab down`.

The service is this module run as a program (`python -m tailnix_lab.api_service LAB_DIR TAG...`): it
serves `TailscaleApi` on the lab's control plane with one OAuth client that may apply TAG..., and writes
`LAB_DIR/api.env` (0600) with `TS_API_CLIENT_ID`, `TS_API_CLIENT_SECRET` and `TS_BASE_URL`, the names
`tailnix rotate-key --mint` and Tailscale's `get-authkey` read. SIGTERM stops it and removes the file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tailnix.mint import BASE_URL_ENV, CLIENT_ID_ENV, CLIENT_SECRET_ENV
from tailnix_lab.layout import LabError, LabLayout

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
MODULE = "tailnix_lab.api_service"


def start_api(layout: LabLayout, tags: tuple[str, ...]) -> Path:
    """Start the service for the lab in `layout` and wait until it has written its api.env; return it."""
    stop_api(layout)
    log = layout.state / "api.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(layout.root), *tags],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # it outlives `tailnix lab up`, as the hosts do
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not layout.api_env.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise LabError(f"the lab's Tailscale API did not start: {log.read_text().strip() or 'no output'}")
        time.sleep(0.02)
    return layout.api_env


def stop_api(layout: LabLayout) -> None:
    """Stop the lab's API service if it runs (only the process its pid file names and that is this module)."""
    try:
        pid = int(layout.api_pid.read_text())
    except (OSError, ValueError):
        layout.api_env.unlink(missing_ok=True)
        return
    if _is_service(pid, layout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _is_service(pid, layout):
            if time.monotonic() > deadline:
                raise LabError(f"the lab's Tailscale API (pid {pid}) still runs after SIGTERM")
            time.sleep(0.02)
    layout.api_pid.unlink(missing_ok=True)
    layout.api_env.unlink(missing_ok=True)


def api_runs(layout: LabLayout) -> bool:
    """Whether the lab's API service runs (its pid file names a live process of this module for this lab)."""
    try:
        return _is_service(int(layout.api_pid.read_text()), layout)
    except (OSError, ValueError):
        return False


def _is_service(pid: int, layout: LabLayout) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z" and MODULE.encode() in argv and str(layout.root).encode() in argv


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Write `NAME=value` lines readable by the owner only, all at once (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(f"{name}={value}\n" for name, value in values.items()))
    os.replace(tmp, path)


def serve(root: Path, tags: tuple[str, ...]) -> None:
    """Serve the API for the lab in `root` until SIGTERM or SIGINT."""
    from tailnix_lab.emulator.api import TailscaleApi

    layout = LabLayout(root)
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    with TailscaleApi(layout.control) as api:
        client_id, secret = api.add_client(tags)
        layout.api_pid.write_text(f"{os.getpid()}\n")
        write_env_file(
            layout.api_env, {CLIENT_ID_ENV: client_id, CLIENT_SECRET_ENV: secret, BASE_URL_ENV: api.url}
        )
        try:
            stopping.wait()
        finally:
            layout.api_env.unlink(missing_ok=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), tuple(sys.argv[2:]))
