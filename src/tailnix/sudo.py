"""Deploying as a non-root user with sudo (`ssh_user: admin`, `_sudo: True`), through pyinfra's own sudo.

pyinfra wraps an operation's commands and uploads in `sudo -H -n sh -c '...'` by itself. The commands
tailnix runs while an operation executes (following the detached switch, confirming it over a new
connection, verifying) go through `host.run_shell_command`, which knows nothing of the operation:
they are given the operation's connector arguments (`operation_arguments`).

A sudo that asks for a password is refused before any command runs through it. pyinfra would prompt
for the password (a run without a terminal has nobody to answer) and then hand it to the host on a
command line (`env PYINFRA_SUDO_PASSWORD=... sudo -A ...`), where every user of the host can read it.
"""

from __future__ import annotations

from typing import cast

from pyinfra.api.arguments import (
    CONNECTOR_ARGUMENT_KEYS,
    AllArguments,
    ConnectorArguments,
    pop_global_arguments,
)
from pyinfra.api.facts import FactBase
from pyinfra.api.host import Host

SUDO_WORKS = "ok"
REFUSED_PREFIX = "refused: "


def operation_arguments(host: Host) -> ConnectorArguments:
    """The connector arguments (`_sudo` and the rest) of the operation running on `host`."""
    arguments = cast(dict[str, object], host.current_op_global_arguments or {})
    return cast(
        ConnectorArguments, {key: arguments[key] for key in CONNECTOR_ARGUMENT_KEYS if key in arguments}
    )


class SudoAccess(FactBase[str]):
    """`ok` when sudo runs a command as root without asking for anything, else `refused: <what sudo said>`.

    Read with `_sudo=False`: it asks sudo itself, with `-n`. sudo's own words are prefixed so that pyinfra
    does not take them for a password prompt to answer.
    """

    def command(self) -> str:
        return (
            'if answer=$(sudo -n true 2>&1 < /dev/null); then echo ok; else printf "refused: %s\\n" '
            '"$(printf "%s" "$answer" | head -n 1)"; fi'
        )

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else REFUSED_PREFIX + "no answer"


def uses_sudo(host: Host) -> bool:
    """Whether pyinfra runs this host's commands with sudo (host data `_sudo`, or `--sudo`)."""
    return bool(_host_arguments(host).get("_sudo"))


def _host_arguments(host: Host) -> AllArguments:
    # pyinfra's own resolution of `_sudo` and the rest (host data, then --sudo and the config); it looks up
    # each of its thirty arguments, so each host asks it once.
    key = (id(host.state), host.name)
    if key not in _HOST_ARGUMENTS:
        _HOST_ARGUMENTS[key], _ = pop_global_arguments(host.state, host, {})
    return _HOST_ARGUMENTS[key]


_HOST_ARGUMENTS: dict[tuple[int, str], AllArguments] = {}


def login_user(ssh_user: object) -> str:
    """The user a host logs in as (its `ssh_user`), for messages."""
    return str(ssh_user or "the SSH user")


def password_refusal(name: str, user: str) -> str:
    """Why a sudo password given to pyinfra (`_sudo_password`) is refused for host `name`."""
    return (
        f"{name}: tailnix does not deploy with a sudo password: pyinfra hands it to the host on a "
        f"command line, which every user of the host can read. Give {user} sudo without a password "
        "(on NixOS: security.sudo.wheelNeedsPassword = false, or a NOPASSWD rule for that user) and "
        "remove _sudo_password."
    )


def host_password_refusal(host: Host) -> str | None:
    """`password_refusal` when pyinfra would sudo on this host with a password; None otherwise."""
    arguments = _host_arguments(host)
    if not arguments.get("_sudo") or not (arguments.get("_sudo_password") or host.state.config.SUDO_PASSWORD):
        return None
    return password_refusal(host.name, login_user(host.data.get("ssh_user")))


def sudo_refusal(name: str, user: str, answer: str) -> str | None:
    """What to tell the user when `SudoAccess` did not answer `ok` on host `name`; None when sudo works."""
    if answer == SUDO_WORKS:
        return None
    said = answer.removeprefix(REFUSED_PREFIX).strip() or "nothing"
    if "password" in said or "authentication" in said:
        return (
            f"{name}: sudo asks {user} for a password (sudo said: {said!r}); tailnix runs sudo "
            f"without a terminal and never sends a password. Give {user} sudo without a password (on "
            "NixOS: security.sudo.wheelNeedsPassword = false, or a NOPASSWD rule for that user) and "
            "try again. Nothing was changed on the host."
        )
    return (
        f"{name}: {user} cannot run commands as root with sudo (sudo said: {said!r}); "
        "nothing was changed on the host"
    )
