"""The ssh-to-age conversion, checked against age-keygen and sops."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tailnix.agekey import KeyFormatError, ssh_private_key_to_age_identity, ssh_public_key_to_age


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def test_recipient_matches_age_keygen_of_the_converted_identity(ssh_key: Path, tmp_path: Path) -> None:
    identity = tmp_path / "identity.txt"
    identity.write_text(ssh_private_key_to_age_identity(ssh_key.read_text()) + "\n")
    shown = subprocess.run(
        ["age-keygen", "-y", str(identity)], capture_output=True, text=True, check=True
    ).stdout.strip()
    recipient = ssh_public_key_to_age(Path(f"{ssh_key}.pub").read_text())
    assert recipient.startswith("age1")
    assert recipient == shown


def test_identity_is_uppercase_age_secret_key(ssh_key: Path) -> None:
    identity = ssh_private_key_to_age_identity(ssh_key.read_text())
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert identity == identity.upper()


def test_known_vector() -> None:
    # A fixed key, so a change in the conversion cannot hide behind age-keygen agreeing with itself.
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGLE0VGP2ndwRs0lJAblXG9BLz0StX5zbxAFm6qAwEhM root@vm"
    assert ssh_public_key_to_age(line) == "age1mhxguuj8uq7ksayxdwwns0y8e260ehyy5ea3qhp5flyydxdfeavs7vcsxw"


@pytest.mark.parametrize(
    "line",
    [
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 root@vm",
        "ssh-ed25519 not-base64!!",
        "ssh-ed25519",
        "",
    ],
)
def test_malformed_public_keys_are_refused(line: str) -> None:
    with pytest.raises(KeyFormatError):
        ssh_public_key_to_age(line)


def test_private_key_without_openssh_armour_is_refused() -> None:
    with pytest.raises(KeyFormatError, match="BEGIN"):
        ssh_private_key_to_age_identity("not a key")
