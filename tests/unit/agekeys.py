"""Real age identities for the tests that encrypt with the real sops."""

from __future__ import annotations

import subprocess
from pathlib import Path


def new_age_identity(directory: Path, name: str = "admin.agekey") -> tuple[Path, str]:
    """Make an age identity file in `directory` with `age-keygen`; return it and its recipient."""
    key_file = directory / name
    subprocess.run(["age-keygen", "-o", str(key_file)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(key_file)], capture_output=True, text=True, check=True
    ).stdout.strip()
    return key_file, recipient
