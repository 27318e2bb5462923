"""The admin's age key on the workstation: where sops looks for it, and a new one when there is none.

sops reads the key from `$SOPS_AGE_KEY_FILE`, else from `sops/age/keys.txt` in the user config directory
(`getUserConfigDir` in sops' `age/keysource.go`: Go's `os.UserConfigDir`, so `$XDG_CONFIG_HOME` or
`~/.config`; on macOS `~/Library/Application Support` unless `$XDG_CONFIG_HOME` is set). A key made here
goes exactly there, so sops, `tailnix` and the deploy find it with no setting.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tailnix.agekey import KeyFormatError, age_identity, age_identity_bytes, age_recipient

SOPS_AGE_KEY_FILE_ENV = "SOPS_AGE_KEY_FILE"
USER_CONFIG_KEY_FILE = Path("sops", "age", "keys.txt")
_IDENTITY_LINE = re.compile(r"^AGE-SECRET-KEY-1[0-9A-Z]+$", re.MULTILINE)


class AdminKeyError(ValueError):
    """The admin key file cannot be read or written; the message names it and what to do."""


@dataclass(frozen=True)
class AdminKey:
    """The admin's age key file, the recipient `.sops.yaml` names for it, and whether it was just made."""

    path: Path
    recipient: str
    made: bool


def sops_age_key_file(environ: Mapping[str, str] | None = None, platform: str = sys.platform) -> Path:
    """Where sops reads the admin's age key when nothing else is said (see the module's docstring)."""
    env = os.environ if environ is None else environ
    if env.get(SOPS_AGE_KEY_FILE_ENV):
        return Path(env[SOPS_AGE_KEY_FILE_ENV]).expanduser()
    config_home = env.get("XDG_CONFIG_HOME", "")
    if config_home and Path(config_home).is_absolute():
        base = Path(config_home)
    elif platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path.home() / ".config"
    return base / USER_CONFIG_KEY_FILE


def recipient_of(identity: str) -> str:
    """The `age1...` recipient of an `AGE-SECRET-KEY-1...` identity (what `age-keygen -y` prints)."""
    private = X25519PrivateKey.from_private_bytes(age_identity_bytes(identity))
    return age_recipient(private.public_key().public_bytes_raw())


def find_or_make_admin_key(path: Path) -> AdminKey:
    """The admin key in `path` (its first identity), or a new one written there, readable by its owner only."""
    if path.exists():
        try:
            identities = _IDENTITY_LINE.findall(path.read_text())
            if not identities:
                raise KeyFormatError("no AGE-SECRET-KEY-1... line")
            return AdminKey(path, recipient_of(identities[0]), made=False)
        except (OSError, UnicodeDecodeError, KeyFormatError) as error:
            raise AdminKeyError(
                f"{path} is where sops looks for your age key, but no age identity can be read from it "
                f"({error}); fix it, or point SOPS_AGE_KEY_FILE at your key"
            ) from None
    identity = age_identity(os.urandom(32))
    recipient = recipient_of(identity)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created owner-only from the start (O_EXCL: never over a file that appeared meanwhile).
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(f"# created: {created}\n# public key: {recipient}\n{identity}\n")
    except OSError as error:
        raise AdminKeyError(f"cannot write the admin age key {path}: {error.strerror}") from None
    return AdminKey(path, recipient, made=True)
