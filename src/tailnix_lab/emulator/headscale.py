"""The lab's `headscale` command: the CLI of headscale v0.29.2 for what tailnix uses, on the lab's control plane.

Written after headscale v0.29.2's `cmd/headscale/cli/preauthkeys.go`, `users.go`, `root.go` and `utils.go`
(`printOutput`, `printError`, `expirationFromFlag`), and `hscontrol/db/preauth_keys.go` (the key format
`hskey-auth-{12-char prefix}-{64-char secret}`), `hscontrol/grpcv1.go` (`validateTag`):

- `headscale users list [-o json|json-line]`, `headscale users create NAME`;
- `headscale preauthkeys create --user ID [--reusable] [--ephemeral] [-e DURATION] [--tags tag:a,tag:b] [-o json]`:
  the key is printed once, on stdout; the duration is Prometheus-style (`90d`, `1h30m`), default `1h`.

Errors go to stderr as `Error: ...` (or `{"error": "..."}` with `-o json`), exit 1. The keys it mints are
keys of the lab's control plane, so `tailscale up --login-server URL --auth-key hskey-auth-...` logs a lab
host in with them. The real server's gRPC errors carry their status: `rpc error: code = Unknown desc = ...`.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.emulator.hostroot import control_dir

DEFAULT_EXPIRATION = "1h"
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DURATION_SECONDS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_BOOL_FLAGS = {"--reusable": "reusable", "--ephemeral": "ephemeral"}
_VALUE_FLAGS = {
    "--user": "user",
    "-u": "user",
    "--expiration": "expiration",
    "-e": "expiration",
    "--tags": "tags",
    "--output": "output",
    "-o": "output",
}
_FLAG_NAMES = {"user": "-u, --user", "expiration": "-e, --expiration", "output": "-o, --output"}


class CommandError(Exception):
    """A failure the real CLI reports through `printError` and exit 1."""


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration (`model.ParseDuration`), as `expirationFromFlag` reads `--expiration`."""
    match = _DURATION.fullmatch(text)
    if text == "0":
        return 0.0
    if not text or match is None or not any(match.groups()):
        raise CommandError(f"parsing duration: not a valid duration string: {json.dumps(text)}")
    return sum(int(part) * unit for part, unit in zip(match.groups(), _DURATION_SECONDS, strict=True) if part)


def _parse_flags(args: list[str], allowed: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Parse cobra/pflag style flags (`--f v`, `--f=v`, `-f v`); return the values and the positionals."""
    values: dict[str, Any] = {"tags": []}
    positional: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, value = arg.partition("=")
        if name in _BOOL_FLAGS and _BOOL_FLAGS[name] in allowed:
            values[_BOOL_FLAGS[name]] = not has_value or value == "true"
            continue
        field = _VALUE_FLAGS.get(name)
        if field is None or field not in allowed:
            flag = name.lstrip("-")
            raise CommandError(
                f"unknown flag: {name}"
                if name.startswith("--")
                else f"unknown shorthand flag: {flag!r} in {arg}"
            )
        if not has_value:
            if index >= len(args):
                raise CommandError(f"flag needs an argument: {name}")
            value = args[index]
            index += 1
        if field == "tags":
            values["tags"].extend(tag for tag in value.split(",") if tag)
        else:
            values[field] = value
    return values, positional


def _timestamp(epoch: float) -> dict[str, int]:
    """A protobuf Timestamp as Go's encoding/json writes it (`seconds`, `nanos`, zero values left out)."""
    seconds = int(epoch)
    nanos = int(round((epoch - seconds) * 1e9))
    return {"seconds": seconds, "nanos": nanos} if nanos else {"seconds": seconds}


def _user_json(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["id"], "name": user["name"], "created_at": _timestamp(user["created"])}


def _print(result: Any, override: str, output: str) -> None:
    """`printOutput`: JSON indented with tabs, one line for json-line, else the human text."""
    if output == "json":
        print(json.dumps(result, indent="\t"))
    elif output == "json-line":
        print(json.dumps(result, separators=(",", ":")))
    else:
        print(override)


def _users(args: list[str], control: ControlPlane) -> None:
    sub, rest = (args[0], args[1:]) if args else ("", [])
    values, positional = _parse_flags(rest, {"output"})
    output = values.get("output", "")
    if sub in ("list", "ls", "show"):
        users = [_user_json(user) for user in control.headscale_users()]
        if output:
            _print(users, "", output)
        else:
            print("ID | Name | Username | Email | Created")
            for user in control.headscale_users():
                print(
                    f"{user['id']} |  | {user['name']} |  | {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(user['created']))}"
                )
    elif sub in ("create", "c", "new"):
        if not positional:
            raise CommandError("missing parameters")
        try:
            user = control.add_headscale_user(positional[0])
        except ValueError as error:
            raise CommandError(f"creating user: rpc error: code = Unknown desc = {error}") from None
        _print(_user_json(user), "User created", output)
    else:
        raise CommandError(f'unknown command "{sub}" for "headscale users"')


def _preauthkeys(args: list[str], control: ControlPlane) -> None:
    sub, rest = (args[0], args[1:]) if args else ("", [])
    if sub not in ("create", "c", "new"):
        raise CommandError(f'unknown command "{sub}" for "headscale preauthkeys"')
    values, _ = _parse_flags(rest, {"user", "reusable", "ephemeral", "expiration", "tags", "output"})
    output = values.get("output", "")
    user_text = values.get("user", "0")
    if not user_text.isdigit():
        raise CommandError(
            f'invalid argument "{user_text}" for "-u, --user" flag: strconv.ParseUint: parsing "{user_text}": invalid syntax'
        )
    expires = time.time() + parse_duration(values.get("expiration", DEFAULT_EXPIRATION))
    tags: list[str] = values["tags"]
    for tag in tags:
        problem = _tag_problem(tag)
        if problem:
            raise CommandError(f"creating preauthkey: rpc error: code = InvalidArgument desc = {problem}")
    user_id = int(user_text)
    if user_id == 0 and not tags:
        raise CommandError(
            "creating preauthkey: rpc error: code = Unknown desc = auth-key must be either tagged or owned by user"
        )
    try:
        key, record = control.mint_headscale_key(
            user_id=user_id,
            reusable=bool(values.get("reusable")),
            ephemeral=bool(values.get("ephemeral")),
            tags=tuple(tags),
            expires=expires,
        )
    except LookupError as error:
        raise CommandError(f"creating preauthkey: rpc error: code = Unknown desc = {error}") from None
    result: dict[str, Any] = {}
    if record["headscale_user"] is not None:
        result["user"] = _user_json(record["headscale_user"])
    result.update({"id": record["headscale_id"], "key": key})
    for field in ("reusable", "ephemeral"):
        if record[field]:
            result[field] = True
    result["expiration"] = _timestamp(record["expires"])
    result["created_at"] = _timestamp(record["created"])
    if record["tags"]:
        result["acl_tags"] = record["tags"]
    _print(result, key, output)


def _tag_problem(tag: str) -> str | None:
    """headscale's `validateTag`."""
    if not tag.startswith("tag:"):
        return "tag must start with the string 'tag:'"
    if tag.lower() != tag:
        return "tag should be lowercase"
    if len(tag.split()) > 1:
        return "tags must not contain spaces"
    return None


def _output_of(argv: list[str]) -> str:
    for index, arg in enumerate(argv):
        if arg in ("-o", "--output") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--output="):
            return arg.partition("=")[2]
    return ""


def main(argv: list[str]) -> int:
    """Run `headscale ARGV` and return its exit code."""
    control = ControlPlane(control_dir())
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if command in ("users", "user", "namespace", "namespaces", "ns"):
            _users(rest, control)
        elif command in ("preauthkeys", "preauthkey", "authkey", "pre"):
            _preauthkeys(rest, control)
        else:
            raise CommandError(f'unknown command "{command}" for "headscale"')
    except CommandError as error:
        if _output_of(argv) == "json":
            print(json.dumps({"error": str(error)}, indent="\t"), file=sys.stderr)
        else:
            print(f"Error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
