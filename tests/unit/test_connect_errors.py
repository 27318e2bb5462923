"""The reason a host could not be reached, read from the exception paramiko raised under pyinfra's."""

from __future__ import annotations

import socket

import pytest
from paramiko import RSAKey
from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
    SSHException,
)
from pyinfra.api.exceptions import ConnectError

from tailnix.connect_errors import describe


def _connect_error(cause: BaseException, message: str) -> ConnectError:
    """A ConnectError raised as pyinfra's SSH connector raises it: inside the `except` of `cause`."""
    try:
        try:
            raise cause
        except type(cause):
            raise ConnectError(message)  # noqa: B904 - as pyinfra raises it, with the cause as its context
    except ConnectError as error:
        return error
    raise AssertionError("not raised")


KEY = RSAKey.generate(1024)


@pytest.mark.parametrize(
    ("cause", "message", "said"),
    [
        (
            NoValidConnectionsError({("127.0.0.1", 22): ConnectionRefusedError(111, "refused")}),
            "Could not connect ([Errno None] Unable to connect to port 22 on 127.0.0.1)",
            "connection refused: Could not connect ([Errno None] Unable to connect to port 22 on 127.0.0.1)",
        ),
        (
            TimeoutError("timed out"),
            "Could not connect (timed out)",
            "timed out after 10s: Could not connect (timed out)",
        ),
        (
            AuthenticationException("Authentication failed."),
            "Authentication error (username=nobody)",
            "authentication failed: Authentication error (username=nobody)",
        ),
        (
            BadHostKeyException("127.0.0.1", KEY, KEY),
            "SSH host key error (Host key for 127.0.0.1 does not match.)",
            "host key mismatch: SSH host key error (Host key for 127.0.0.1 does not match.)",
        ),
        (
            SSHException("Server '[127.0.0.1]:2222' not found in known_hosts"),
            "SSH error (Server '[127.0.0.1]:2222' not found in known_hosts)",
            "unknown host key: SSH error (Server '[127.0.0.1]:2222' not found in known_hosts)",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            "Could not resolve hostname (x)",
            "the host name does not resolve: Could not resolve hostname (x)",
        ),
        (EOFError(), "EOF error ()", "EOF error ()"),
    ],
)
def test_each_kind_of_failed_connection_is_named_before_pyinfras_words(
    cause: BaseException, message: str, said: str
) -> None:
    assert describe(_connect_error(cause, message), 10) == said
