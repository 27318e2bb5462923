"""Why pyinfra could not connect to a host, for the deploy's line about that host.

pyinfra gives the reason (the `ConnectError` its SSH connector raised) to a log line and to the state
callback `host_connect_error(state, host, error)` only. A deploy file registers its callbacks too late for
that: pyinfra connects to every host before it runs the deploy file, and `State.init()`, which runs after
the fleet's `config.py`, starts the state with no callback at all (`pyinfra_cli/cli.py`, `_main`). So
`config.py` calls `record_connect_errors()`, which registers the callback as soon as `State.init()` has
run, before pyinfra connects. The reason is then read from the error itself, not from the log line: the
connector raises `ConnectError` inside the `except` of paramiko's exception, which stays its `__context__`
(`pyinfra/connectors/ssh.py`, `connect` and `_connect`).
"""

from __future__ import annotations

import socket
from typing import Any

from paramiko.ssh_exception import (
    AuthenticationException,
    BadHostKeyException,
    NoValidConnectionsError,
    SSHException,
)
from pyinfra.api.host import Host
from pyinfra.api.state import BaseStateCallback, State

_REASONS: dict[int, tuple[Host, str]] = {}
"""By the host's identity (the host is kept, so its id is not reused): host, reason."""


def describe(error: BaseException, timeout: int) -> str:
    """The kind of failure in plain words, then pyinfra's own message."""
    cause = error.__cause__ or error.__context__
    message = str(error.args[0]) if error.args else str(error)
    if isinstance(cause, BadHostKeyException):
        kind = "host key mismatch"
    elif isinstance(cause, AuthenticationException):
        kind = "authentication failed"
    elif isinstance(cause, NoValidConnectionsError):
        kind = "connection refused"
    elif isinstance(cause, TimeoutError | socket.timeout):
        kind = f"timed out after {timeout}s"
    elif isinstance(cause, socket.gaierror):
        kind = "the host name does not resolve"
    elif isinstance(cause, SSHException) and "known_hosts" in str(cause):
        kind = "unknown host key"
    else:
        return message
    return f"{kind}: {message}"


class ConnectErrors(BaseStateCallback):
    """Keeps the reason of each failed connection, for `reason_of`."""

    @staticmethod
    def host_connect_error(state: State, host: Host, error: Any) -> None:
        _REASONS[id(host)] = (host, describe(error, int(state.config.CONNECT_TIMEOUT)))


def record_connect_errors() -> None:
    """From `config.py`: keep the reason pyinfra could not connect to a host, for the deploy's line on it."""
    from pyinfra.context import ctx_state

    if not ctx_state.isset():  # type: ignore[no-untyped-call]
        return
    state: State = ctx_state.get()  # type: ignore[no-untyped-call]
    initialise = state.init

    def init_then_record(*args: Any, **kwargs: Any) -> None:
        initialise(*args, **kwargs)
        state.add_callback_handler(ConnectErrors())  # type: ignore[no-untyped-call]

    setattr(state, "init", init_then_record)  # noqa: B010 - the instance's own init, for this run only


def reason_of(host: Host) -> str | None:
    """Why pyinfra could not connect to `host`; None when it was not recorded."""
    recorded = _REASONS.get(id(host))
    return recorded[1] if recorded is not None and recorded[0] is host else None
