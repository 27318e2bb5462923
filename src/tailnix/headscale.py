"""Mint a pre-auth key on a headscale server, over SSH, for a fleet whose login server is a headscale one.

headscale has no OAuth clients: its admin CLI runs on the server (headscale v0.29.2,
`cmd/headscale/cli/preauthkeys.go`, `users.go`). tailnix runs it there through pyinfra's connection to the
inventory host named by `tailnix_headscale_host`:

    headscale users list -o json                    # the user of tailnix_headscale_user -> its numeric ID
    headscale preauthkeys create --user ID --reusable --expiration 90d [--tags tag:a,tag:b] -o json

The new key comes back on the command's stdout only: it is never in an argument on either side, in a file or
in the output, and it lives in this process's memory until sops writes it.

retire and the reinstall find and delete a host's node there the same way (`HeadscaleNodes`):

    headscale nodes list -o json                    # the node of the host's name and the fleet's user
    headscale nodes delete -i ID --force
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from tailnix.devices import Device
from tailnix.fleet import FleetHost, inventory_directory
from tailnix.mint import MintedKey, MintError
from tailnix.tailnet_names import check_tag

HEADSCALE_HOST = "tailnix_headscale_host"
HEADSCALE_USER = "tailnix_headscale_user"
LOGIN_SERVER = "tailscale_login_server"
# headscale's pre-auth keys (v0.29.2 `hscontrol/db/preauth_keys.go`): hskey-auth-{12-char prefix}-{secret}.
KEY_PREFIX = "hskey-auth-"
PREFIX_LENGTH = 12


@dataclass(frozen=True)
class HeadscaleServer:
    """Where the fleet's keys are minted: the inventory host running headscale, and the keys' user."""

    host: str
    user: str
    login_server: str


def _agreed(hosts: Sequence[FleetHost], key: str) -> object:
    """The one value of `key` every host has; MintError naming the hosts of each value when they differ."""
    by_value: dict[str, list[str]] = {}
    for host in hosts:
        by_value.setdefault(json.dumps(host.data.get(key)), []).append(host.name)
    if len(by_value) > 1:
        sides = "; ".join(
            f"{', '.join(names)}: {json.loads(value)!r}"
            if json.loads(value) is not None
            else f"{', '.join(names)}: not set"
            for value, names in by_value.items()
        )
        raise MintError(f"{key} differs between the hosts ({sides}): --mint mints one key for them all")
    return json.loads(next(iter(by_value))) if by_value else None


def without_servers(chosen: Sequence[FleetHost], fleet: Sequence[FleetHost]) -> list[FleetHost]:
    """`chosen` without the hosts that only run headscale for the others.

    A host that some host names as its `tailnix_headscale_host`, and that logs in to no login server itself,
    is the control server, not a node: a key is neither minted for it nor deployed to it.
    """
    servers = {h.data.get(HEADSCALE_HOST) for h in fleet}
    return [h for h in chosen if not (h.name in servers and not h.data.get(LOGIN_SERVER))]


def headscale_server(chosen: Sequence[FleetHost], fleet: Sequence[FleetHost]) -> HeadscaleServer | None:
    """The headscale server to mint on, when the chosen hosts log in to a login server; None for Tailscale's.

    + chosen: the hosts the key is for; they must agree on the login server, the host and the user
    + fleet: every inventory host (the headscale host is one, usually not among `chosen`)
    """
    login_server = _agreed(chosen, LOGIN_SERVER)
    if not login_server:
        return None
    host = _agreed(chosen, HEADSCALE_HOST)
    if not host:
        raise MintError(
            f"{LOGIN_SERVER} = {login_server!r}, and there is no {HEADSCALE_HOST}: name the inventory host that "
            "runs headscale, where --mint runs `headscale preauthkeys create`"
        )
    if not isinstance(host, str) or host not in {h.name for h in fleet}:
        raise MintError(
            f"{HEADSCALE_HOST} = {host!r}: not a host of the inventory (hosts: {', '.join(h.name for h in fleet)})"
        )
    user = _agreed(chosen, HEADSCALE_USER)
    if not user or not isinstance(user, str):
        raise MintError(
            f"{HEADSCALE_USER} = {user!r}: give the headscale user (by name) the keys belong to "
            f"(`headscale users list` on {host})"
        )
    return HeadscaleServer(host, user, str(login_server))


class HeadscaleHost:
    """An SSH session to the headscale host, through pyinfra's connector and the host's inventory data."""

    def __init__(self, inventory_file: Path, name: str) -> None:
        self.inventory_file = inventory_file
        self.name = name

    def run(self, argv: list[str]) -> str:
        """Run `argv` on the host and return its stdout; MintError with its stderr when it fails."""
        from pyinfra.api.command import StringCommand
        from pyinfra.api.config import Config
        from pyinfra.api.state import State
        from pyinfra.context import ctx_state
        from pyinfra_cli.inventory import make_inventory

        command = " ".join(shlex.quote(part) for part in argv)
        state = State()
        with ctx_state.use(state):
            inventory = make_inventory(
                str(self.inventory_file.absolute()), cwd=str(inventory_directory(self.inventory_file))
            )
            state.init(inventory, Config())  # type: ignore[no-untyped-call]
            host = inventory.get_host(self.name)
            try:
                host.connect(raise_exceptions=True)
                # A host reached as an admin with sudo runs headscale as root, as the deploy runs its commands.
                ok, output = host.run_shell_command(
                    StringCommand(command),
                    print_output=False,
                    print_input=False,
                    _sudo=bool(host.data.get("_sudo")),
                )
            except Exception as error:  # pyinfra and paramiko raise many kinds for an unreachable host
                raise MintError(
                    f"{HEADSCALE_HOST} = {self.name!r}: cannot reach it over SSH: {error}"
                ) from None
            finally:
                host.disconnect()
        if not ok:
            said = " ".join(line.strip() for line in output.stderr_lines).strip() or "no output"
            raise MintError(f"{self.name}: `{command}` failed: {said}")
        return "\n".join(output.stdout_lines)


def user_id(server: HeadscaleServer, host: HeadscaleHost) -> int:
    """The numeric ID of `server.user` (`headscale users list -o json`)."""
    # MintError is a ValueError: run the command outside the `try` that catches what json.loads raises.
    printed = host.run(["headscale", "users", "list", "-o", "json"])
    try:
        users = json.loads(printed or "[]")
    except ValueError:
        raise MintError(f"{server.host}: `headscale users list -o json` did not print JSON") from None
    names = [str(user.get("name")) for user in users if isinstance(user, dict)]
    for user in users:
        if isinstance(user, dict) and user.get("name") == server.user and isinstance(user.get("id"), int):
            return int(user["id"])
    raise MintError(
        f"{HEADSCALE_USER} = {server.user!r}: no such user on the headscale host {server.host} "
        f"(its users: {', '.join(names) or 'none'}); create it with `headscale users create {server.user}`"
    )


def mint_headscale_key(
    server: HeadscaleServer,
    host: HeadscaleHost,
    *,
    tags: tuple[str, ...],
    expiry_days: int,
    reusable: bool = True,
    ephemeral: bool = False,
) -> MintedKey:
    """Mint a pre-auth key of the server's user with `headscale preauthkeys create`; MintError when refused."""
    for tag in tags:
        reason = check_tag(tag)
        if reason:
            raise MintError(f"--tag = {tag!r}: {reason}")
    owner = user_id(server, host)
    argv = ["headscale", "preauthkeys", "create", "--user", str(owner), "--expiration", f"{expiry_days}d"]
    argv += ["--reusable"] if reusable else []
    argv += ["--ephemeral"] if ephemeral else []
    argv += ["--tags", ",".join(tags)] if tags else []
    printed = host.run([*argv, "-o", "json"])
    try:
        record = json.loads(printed)
        key = record["key"]
        expires = datetime.fromtimestamp(int(record["expiration"]["seconds"]), tz=UTC).date()
    except (ValueError, KeyError, TypeError):
        raise MintError(
            f"{server.host}: `headscale preauthkeys create` did not print a key as JSON"
        ) from None
    if not isinstance(key, str) or not key:
        raise MintError(f"{server.host}: `headscale preauthkeys create` printed no key")
    return MintedKey(key, str(record.get("id", "?")), expires, bool(record.get("reusable")), tags)


def key_expiry(host: HeadscaleHost, key: str) -> tuple[bool, date | None]:
    """Whether headscale knows `key`, and when it expires (`headscale preauthkeys list -o json`).

    v0.29.2 lists a key by its prefix only (`hscontrol/types/preauth_key.go`: `hskey-auth-PREFIX-***`), and
    a legacy key whole; `preauthkeys list` takes no user there and lists every key.
    """
    prefix = key[len(KEY_PREFIX) :][:PREFIX_LENGTH] if key.startswith(KEY_PREFIX) else ""
    shown = f"{KEY_PREFIX}{prefix}-***" if prefix else key
    printed = host.run(["headscale", "preauthkeys", "list", "-o", "json"])
    try:
        keys = json.loads(printed or "[]")
    except ValueError:
        raise MintError(f"{host.name}: `headscale preauthkeys list -o json` did not print JSON") from None
    for record in keys if isinstance(keys, list) else []:
        if isinstance(record, dict) and record.get("key") == shown:
            seconds = (record.get("expiration") or {}).get("seconds")
            expires = datetime.fromtimestamp(int(seconds), tz=UTC).date() if seconds is not None else None
            return True, expires
    return False, None


# The owner headscale lists a tagged node under (v0.29.2 `hscontrol/types/users.go`, `TaggedDevices`).
TAGGED_DEVICES_USER = "tagged-devices"


class HeadscaleNodes:
    """The nodes of a headscale server, as retire and the reinstall find and delete a host's old node.

    Over SSH on the headscale host, with its admin CLI (v0.29.2 `cmd/headscale/cli/nodes.go`):
    `headscale nodes list -o json`, then `headscale nodes delete -i ID --force`. A host's node is the one whose
    `name` (the host name the node reported) is the host's and whose owner is the fleet's user, or
    `tagged-devices` for a node owned by its tags (`hscontrol/grpcv1.go`, `nodesToProto`).
    """

    def __init__(self, server: HeadscaleServer, host: HeadscaleHost) -> None:
        self.server = server
        self.host = host
        self.via = f" with `headscale nodes delete` on {server.host}"
        self.how_to_remove = f"with `headscale nodes delete -i ID` on {server.host}"

    def _owned(self) -> list[tuple[Device, str]]:
        """The nodes of the fleet's user or tagged, each with the host name it reported."""
        printed = self.host.run(["headscale", "nodes", "list", "-o", "json"])
        try:
            nodes = json.loads(printed or "[]")
        except ValueError:
            raise MintError(
                f"{self.server.host}: `headscale nodes list -o json` did not print JSON"
            ) from None
        if not isinstance(nodes, list):
            raise MintError(f"{self.server.host}: `headscale nodes list -o json` did not print a list")
        owners = {self.server.user, TAGGED_DEVICES_USER}
        return [
            (
                Device(
                    str(node.get("id")),
                    str(node.get("name")),
                    str(node.get("given_name") or ""),
                    online=bool(node.get("online")),
                ),
                str(node.get("name")),
            )
            for node in nodes
            if isinstance(node, dict) and (node.get("user") or {}).get("name") in owners
        ]

    def named(self, hostname: str) -> list[Device]:
        """The nodes of the fleet's user (or tagged) that have `hostname` as their name."""
        return [device for device, name in self._owned() if name == hostname]

    def by_id(self, device_id: str) -> Device | None:
        """The node of that ID among the fleet's user's (or tagged) ones; None when headscale has none."""
        return next((device for device, _ in self._owned() if device.device_id == device_id), None)

    def delete(self, device: Device) -> bool:
        """Delete the node; False when headscale knows it no more."""
        try:
            self.host.run(["headscale", "nodes", "delete", "-i", device.device_id, "--force"])
        except MintError as error:
            if "desc = node not found" in str(error):
                return False
            raise
        return True


def headscale_nodes(
    inventory_file: Path, member: FleetHost, fleet: Sequence[FleetHost]
) -> HeadscaleNodes | None:
    """The nodes of the headscale server `member` logs in to; None when it logs in to Tailscale's.

    MintError when its login server is a headscale one and the inventory does not say where it runs.
    """
    server = headscale_server([member], fleet)
    return HeadscaleNodes(server, HeadscaleHost(inventory_file, server.host)) if server is not None else None
