"""SSH ed25519 keys as age keys, converted exactly as ssh-to-age does.

sops-nix decrypts on a host with a key derived from the host's `/etc/ssh/ssh_host_ed25519_key`; the matching
recipient, derived from the public half, is what goes into `.sops.yaml`. Standard library only: the lab's
emulated hosts import this module too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

_FIELD_PRIME = 2**255 - 19
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_OPENSSH_PRIVATE_HEADER = "-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_PRIVATE_FOOTER = "-----END OPENSSH PRIVATE KEY-----"


class KeyFormatError(ValueError):
    """A key that is not an ed25519 SSH key in OpenSSH format."""


def _bech32_polymod(values: list[int]) -> int:
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(generators):
            if (top >> bit) & 1:
                checksum ^= generator
    return checksum


def _bech32_encode(hrp: str, data: bytes) -> str:
    """BIP-173 bech32 (not bech32m), as age uses it, without the 90-character limit."""
    words: list[int] = []
    accumulator = 0
    bits = 0
    for byte in data:
        accumulator = (accumulator << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            words.append((accumulator >> bits) & 31)
    if bits:
        words.append((accumulator << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _bech32_polymod(expanded + words + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[w] for w in words + checksum)


def _bech32_decode(text: str) -> tuple[str, bytes]:
    """The human-readable part and the data of a bech32 string (any case), checksum verified."""
    lowered = text.strip().lower()
    hrp, separator, rest = lowered.rpartition("1")
    if not separator or not hrp or len(rest) < 6 or any(c not in _BECH32_CHARSET for c in rest):
        raise KeyFormatError("not a bech32 string")
    words = [_BECH32_CHARSET.index(c) for c in rest]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + words) != 1:
        raise KeyFormatError("bech32 checksum mismatch")
    accumulator = bits = 0
    data = bytearray()
    for word in words[:-6]:
        accumulator = (accumulator << 5) | word
        bits += 5
        if bits >= 8:
            bits -= 8
            data.append((accumulator >> bits) & 0xFF)
    return hrp, bytes(data)


def age_identity_bytes(identity: str) -> bytes:
    """The 32-byte X25519 scalar of an `AGE-SECRET-KEY-1...` identity."""
    hrp, data = _bech32_decode(identity)
    if hrp != "age-secret-key-" or len(data) != 32:
        raise KeyFormatError("not an age identity (AGE-SECRET-KEY-1...)")
    return data


def age_identity(scalar: bytes) -> str:
    """The `AGE-SECRET-KEY-1...` text of a 32-byte X25519 scalar."""
    return _bech32_encode("age-secret-key-", scalar).upper()


def age_recipient(public: bytes) -> str:
    """The `age1...` text of a 32-byte X25519 public key."""
    return _bech32_encode("age", public)


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise KeyFormatError("the key data is truncated")
    (length,) = struct.unpack(">I", blob[offset : offset + 4])
    start = offset + 4
    if start + length > len(blob):
        raise KeyFormatError("the key data is truncated")
    return blob[start : start + length], start + length


def ed25519_public_bytes(public_key_line: str) -> bytes:
    """The 32-byte ed25519 point of an `ssh-ed25519 AAAA... [comment]` line."""
    fields = public_key_line.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        shown = public_key_line.strip()[:40]
        raise KeyFormatError(f"not an ssh-ed25519 public key: {shown!r}")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except binascii.Error as error:
        raise KeyFormatError(f"the ssh-ed25519 key is not valid base64: {error}") from None
    key_type, offset = _read_string(blob, 0)
    point, _ = _read_string(blob, offset)
    if key_type != b"ssh-ed25519" or len(point) != 32:
        raise KeyFormatError("the ssh-ed25519 key blob is malformed")
    return point


def ssh_public_key_to_age(public_key_line: str) -> str:
    """The `age1...` recipient of an ed25519 SSH public key, as `ssh-to-age` prints it.

    + public_key_line: `ssh-ed25519 AAAA...`, as in `/etc/ssh/ssh_host_ed25519_key.pub`

    The Edwards point y maps to the Montgomery u = (1 + y) / (1 - y) mod 2^255 - 19.
    """
    point = ed25519_public_bytes(public_key_line)
    y = int.from_bytes(point, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow(1 - y, _FIELD_PRIME - 2, _FIELD_PRIME) % _FIELD_PRIME
    return age_recipient(u.to_bytes(32, "little"))


def _ed25519_seed(private_key_text: str) -> bytes:
    lines = [line.strip() for line in private_key_text.strip().splitlines()]
    if not lines or lines[0] != _OPENSSH_PRIVATE_HEADER or lines[-1] != _OPENSSH_PRIVATE_FOOTER:
        raise KeyFormatError("not an OpenSSH private key (missing the BEGIN/END lines)")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error as error:
        raise KeyFormatError(f"the private key is not valid base64: {error}") from None
    magic = b"openssh-key-v1\x00"
    if not blob.startswith(magic):
        raise KeyFormatError("not an openssh-key-v1 private key")
    cipher, offset = _read_string(blob, len(magic))
    _kdf, offset = _read_string(blob, offset)
    _kdf_options, offset = _read_string(blob, offset)
    if cipher != b"none":
        raise KeyFormatError("the private key is passphrase-protected")
    offset += 4  # number of keys: always one in keys ssh-keygen writes
    _public_blob, offset = _read_string(blob, offset)
    private_section, _ = _read_string(blob, offset)
    key_type, inner = _read_string(private_section, 8)  # skip the two check integers
    if key_type != b"ssh-ed25519":
        raise KeyFormatError(f"not an ed25519 key but {key_type.decode(errors='replace')}")
    _public, inner = _read_string(private_section, inner)
    secret, _ = _read_string(private_section, inner)
    if len(secret) != 64:
        raise KeyFormatError("the ed25519 private key has the wrong length")
    return secret[:32]


def ssh_private_key_to_age_identity(private_key_text: str) -> str:
    """The `AGE-SECRET-KEY-1...` identity of an unencrypted OpenSSH ed25519 private key.

    + private_key_text: the content of `/etc/ssh/ssh_host_ed25519_key`

    As ssh-to-age: the first 32 bytes of sha512(seed), unclamped (age clamps when it uses it).
    """
    return age_identity(hashlib.sha512(_ed25519_seed(private_key_text)).digest()[:32])
