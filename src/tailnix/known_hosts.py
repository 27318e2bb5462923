"""Host keys the workstation has never seen: read without trusting them, shown, recorded once confirmed.

pyinfra checks a host's key against one known-hosts file: the host's `ssh_known_hosts_file` (relative to
where pyinfra runs, the inventory's directory for the `tailnix` commands), else `~/.ssh/known_hosts`. Its
default `accept-new` would add a new key there without a word, and fails when `~/.ssh` does not exist.
`tailnix bootstrap` reads each new key itself before pyinfra connects, shows its fingerprint as
`ssh-keygen -l` does, and records it only once the user confirmed it.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

SSH_PORT = 22
SCAN_TIMEOUT = 10
HOST_KEY_TYPE = "ssh-ed25519"
"""The key bootstrap turns into the host's age recipient, and so the one it asks the host for."""


class HostKeyScanError(OSError):
    """The host did not show a host key (unreachable, or no ed25519 key)."""


@dataclass(frozen=True)
class HostAddress:
    """How pyinfra reaches a host, and which known-hosts file it checks the host's key against."""

    host: str
    hostname: str
    port: int
    known_hosts: Path

    @property
    def known_name(self) -> str:
        """The name the key is recorded under, as paramiko looks it up: `[name]:port` off port 22."""
        return self.hostname if self.port == SSH_PORT else f"[{self.hostname}]:{self.port}"

    @classmethod
    def of(cls, host: str, data: Mapping[str, Any], base_dir: Path) -> HostAddress:
        """A host's address from its inventory data; a relative known-hosts file starts in `base_dir`."""
        configured = data.get("ssh_known_hosts_file")
        known_hosts = (
            Path(str(configured)).expanduser() if configured else Path.home() / ".ssh" / "known_hosts"
        )
        return cls(
            host,
            str(data.get("ssh_hostname") or host),
            int(data.get("ssh_port") or SSH_PORT),
            known_hosts if known_hosts.is_absolute() else base_dir / known_hosts,
        )


@dataclass(frozen=True)
class NewHostKey:
    """A host key that is not in the host's known-hosts file yet."""

    address: HostAddress
    key_type: str
    key_base64: str

    @property
    def fingerprint(self) -> str:
        """`SHA256:...`, as `ssh-keygen -l` and ssh's own prompt show it."""
        digest = hashlib.sha256(base64.b64decode(self.key_base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def line(self) -> str:
        """Its known-hosts line."""
        return f"{self.address.known_name} {self.key_type} {self.key_base64}\n"


def is_known(address: HostAddress) -> bool:
    """Whether the host's known-hosts file already holds a key for it (a different one is pyinfra's to refuse)."""
    if not address.known_hosts.is_file():
        return False
    keys = paramiko.HostKeys()
    try:
        keys.load(str(address.known_hosts))
    except (OSError, paramiko.SSHException):
        return False
    return keys.lookup(address.known_name) is not None


def scan(address: HostAddress) -> NewHostKey:
    """The host's ed25519 host key, read in the SSH handshake: nothing is trusted, no login is made."""
    try:
        with socket.create_connection((address.hostname, address.port), timeout=SCAN_TIMEOUT) as sock:
            transport = paramiko.Transport(sock)
            try:
                transport.get_security_options().key_types = (HOST_KEY_TYPE,)
                transport.start_client(timeout=SCAN_TIMEOUT)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
    except (OSError, paramiko.SSHException, EOFError) as error:
        raise HostKeyScanError(
            f"cannot read the host key of {address.hostname}:{address.port}: {error}"
        ) from None
    return NewHostKey(address, key.get_name(), key.get_base64())


def record(new: NewHostKey) -> None:
    """Append the key to the host's known-hosts file (made, with its directory, if missing)."""
    path = new.address.known_hosts
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = path.read_text() if path.is_file() else ""
    with path.open("a") as stream:
        if text and not text.endswith("\n"):
            stream.write("\n")
        stream.write(new.line)
