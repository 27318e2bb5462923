"""Where a lab host's files live, for the emulators that run inside it.

Inside a lab host every path is the real one (`/var/lib/tailscale`, `/run/tailscale`). Unit tests
run the same emulators outside a host, so the host's root can be moved with `TAILNIX_LAB_HOST_ROOT`
and the shared control plane with `TAILNIX_LAB_CONTROL`.
"""

from __future__ import annotations

import os
from pathlib import Path

HOST_ROOT_ENV = "TAILNIX_LAB_HOST_ROOT"
CONTROL_ENV = "TAILNIX_LAB_CONTROL"
DEFAULT_CONTROL_DIR = "/run/tailnix-lab/control"


def host_root() -> Path:
    """Return the directory that stands for `/` on this host."""
    return Path(os.environ.get(HOST_ROOT_ENV) or "/")


def host_path(path: str) -> Path:
    """Map an absolute path as seen on the host (`/var/lib/tailscale`) to where it really is."""
    if not path.startswith("/"):
        raise ValueError(f"host paths are absolute, got {path!r}")
    return host_root() / path.lstrip("/")


def control_dir() -> Path:
    """Return the directory of the lab's control plane, shared by every host."""
    return Path(os.environ.get(CONTROL_ENV) or DEFAULT_CONTROL_DIR)
