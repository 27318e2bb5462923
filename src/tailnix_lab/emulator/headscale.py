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

import hashlib
import json
import re
import sys
import time
from datetime import UTC
from typing import Any

from tailnix_lab.emulator.control import HEADSCALE_KEY_PREFIX, ControlPlane, enabled_routes
from tailnix_lab.emulator.hostroot import control_dir

DEFAULT_EXPIRATION = "1h"
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DURATION_SECONDS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
# The root command's persistent flags (`root.go`), which every command takes.
_ROOT_VALUES = {"--output": "output", "-o": "output", "--config": "config", "-c": "config"}
_ROOT_BOOLS = {"--force": "force"}
# pflag's names of each field, as its errors print them.
_FLAG_NAMES = {
    "user": "-u, --user",
    "expiration": "-e, --expiration",
    "output": "-o, --output",
    "identifier": "-i, --identifier",
    "id": "-i, --id",
}
# headscale v0.29.2 `hscontrol/types/users.go`: the owner that the API shows for tagged nodes, as
# `User.Proto()` gives it (its `created_at` is Go's zero time.Time as a protobuf Timestamp).
TAGGED_DEVICES = {
    "id": 2147455555,
    "name": "tagged-devices",
    "created_at": {"seconds": -62135596800},
    "display_name": "Tagged Devices",
}
REGISTER_METHOD_AUTH_KEY = 1


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


def _parse_flags(
    args: list[str], values_flags: dict[str, str], bool_flags: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Parse cobra/pflag style flags (`--f v`, `--f=v`, `-f v`) of one command and the root's persistent ones;
    return the values (slices as lists) and the positionals."""
    values_flags = {**values_flags, **_ROOT_VALUES}
    bool_flags = {**(bool_flags or {}), **_ROOT_BOOLS}
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
        if name in bool_flags:
            values[bool_flags[name]] = not has_value or value == "true"
            continue
        field = values_flags.get(name)
        if field is None:
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


def _uint(values: dict[str, Any], field: str, *, required: bool = False) -> int:
    """A Uint64 flag's value (0 when not given), with pflag's and cobra's errors."""
    text = values.get(field)
    if text is None:
        if required:
            raise CommandError(f'required flag(s) "{_FLAG_NAMES[field].split("--")[1]}" not set')
        return 0
    if not text.isdigit():
        raise CommandError(
            f'invalid argument "{text}" for "{_FLAG_NAMES[field]}" flag: strconv.ParseUint: parsing "{text}": '
            "invalid syntax"
        )
    return int(text)


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
    values, positional = _parse_flags(rest, {})
    output = values.get("output", "")
    if sub in ("list", "ls", "show"):
        users = [_user_json(user) for user in control.headscale_users()]
        if output:
            _print(users, "", output)
        else:
            print("ID | Name | Username | Email | Created")
            for user in control.headscale_users():
                print(f"{user['id']} |  | {user['name']} |  | {_table_time(user['created'])}")
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


def _table_time(epoch: float) -> str:
    """`HeadscaleDateTimeFormat` (`2006-01-02 15:04:05`)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _key_json(record: dict[str, Any], key: str) -> dict[str, Any]:
    """A pre-auth key as `PreAuthKey.Proto()` gives it (`hscontrol/types/preauth_key.go`): `key` is the new key
    once at its creation, and `hskey-auth-PREFIX-***` in every listing."""
    result: dict[str, Any] = {}
    if record["headscale_user"] is not None:
        result["user"] = _user_json(record["headscale_user"])
    result.update({"id": record["headscale_id"], "key": key})
    for field in ("reusable", "ephemeral"):
        if record[field]:
            result[field] = True
    # Only a single-use key is marked used (`hscontrol/state/state.go`: `UsePreAuthKey` when not reusable).
    if not record["reusable"] and record["uses"] > 0:
        result["used"] = True
    result["expiration"] = _timestamp(record["expires"])
    result["created_at"] = _timestamp(record["created"])
    if record["tags"]:
        result["acl_tags"] = record["tags"]
    return result


def _listed_key(record: dict[str, Any]) -> dict[str, Any]:
    return _key_json(record, f"{HEADSCALE_KEY_PREFIX}{record['id']}-***")


def _preauthkeys(args: list[str], control: ControlPlane) -> None:
    sub, rest = (args[0], args[1:]) if args else ("", [])
    if sub in ("create", "c", "new"):
        _create_preauthkey(rest, control)
    elif sub in ("list", "ls", "show"):
        values, _ = _parse_flags(rest, {})
        keys = control.headscale_keys()
        if values.get("output"):
            _print([_listed_key(k) for k in keys], "", values["output"])
            return
        print("ID | Key/Prefix | Reusable | Ephemeral | Used | Expiration | Created | Owner")
        for record in keys:
            listed = _listed_key(record)
            owner = "\n".join(record["tags"]) or (record["headscale_user"] or {}).get("name") or "-"
            print(
                f"{record['headscale_id']} | {listed['key']} | {str(record['reusable']).lower()} | "
                f"{str(record['ephemeral']).lower()} | {str(listed.get('used', False)).lower()} | "
                f"{_table_time(record['expires'])} | {_table_time(record['created'])} | {owner}"
            )
    elif sub in ("expire", "revoke", "exp", "e"):
        values, _ = _parse_flags(rest, {"--id": "id", "-i": "id"})
        key_id = _uint(values, "id")
        if key_id == 0:
            raise CommandError("missing --id parameter: missing parameters")
        control.expire_headscale_key(key_id)
        _print({}, "Key expired", values.get("output", ""))
    else:
        raise CommandError(f'unknown command "{sub}" for "headscale preauthkeys"')


def _create_preauthkey(args: list[str], control: ControlPlane) -> None:
    values, _ = _parse_flags(
        args,
        {"--user": "user", "-u": "user", "--expiration": "expiration", "-e": "expiration", "--tags": "tags"},
        {"--reusable": "reusable", "--ephemeral": "ephemeral"},
    )
    output = values.get("output", "")
    user_id = _uint(values, "user")
    expires = time.time() + parse_duration(values.get("expiration", DEFAULT_EXPIRATION))
    tags: list[str] = values["tags"]
    for tag in tags:
        problem = _tag_problem(tag)
        if problem:
            raise CommandError(f"creating preauthkey: rpc error: code = InvalidArgument desc = {problem}")
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
    _print(_key_json(record, key), key, output)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _hex_of(kind: str, node: dict[str, Any]) -> str:
    """A stable 32-byte public key for the node's machine or disco key, which the lab has no use for."""
    return hashlib.sha256(f"{kind}:{node['ID']}".encode()).hexdigest()


def _node_json(node: dict[str, Any], *, listed: bool) -> dict[str, Any]:
    """A node as `Node.Proto()` gives it (`hscontrol/types/node.go`), zero values left out.

    + listed: as `nodes list` shows it (`grpcv1.go` `nodesToProto`): a tagged node's user is `tagged-devices`,
      `subnet_routes` its primary and exit routes. Elsewhere (`nodes tag`) a tagged node has no user.
    """
    result: dict[str, Any] = {
        "id": node["HeadscaleID"],
        "machine_key": f"mkey:{_hex_of('machine', node)}",
        "node_key": node["NodeKey"],
        "disco_key": f"discokey:{_hex_of('disco', node)}",
        "ip_addresses": list(node["TailscaleIPs"]),
        "name": node["HostName"],
    }
    if node.get("Tags"):
        if listed:
            result["user"] = json.loads(json.dumps(TAGGED_DEVICES))
    elif node.get("HeadscaleUser") is not None:
        result["user"] = _user_json(node["HeadscaleUser"])
    online = bool(node.get("Online")) and not node.get("LoggedOut")
    result["last_seen"] = _timestamp(
        time.time() if online else _epoch(node.get("LastSeen") or node["Created"])
    )
    if node.get("LoggedOut") and not node.get("Tags"):
        # `tailscale logout` expires the node's key now; headscale keeps the node (`nodes expire` does the same).
        result["expiry"] = _timestamp(float(node["KeyExpiresAt"]))
    if node.get("AuthKey") is not None:
        result["pre_auth_key"] = _listed_key(node["AuthKey"])
    result["created_at"] = _timestamp(_epoch(node["Created"]))
    result["register_method"] = REGISTER_METHOD_AUTH_KEY
    result["given_name"] = str(node["DNSName"]).split(".", 1)[0]
    if online:
        result["online"] = True
    approved = sorted(node.get("ApprovedRoutes") or [])
    advertised = list(node.get("AdvertisedRoutes") or [])
    if approved:
        result["approved_routes"] = approved
    if advertised:
        result["available_routes"] = advertised
    serving = enabled_routes(node) if listed else []
    if serving:
        result["subnet_routes"] = serving
    if node.get("Tags"):
        result["tags"] = list(node["Tags"])
    return result


def _nodes(args: list[str], control: ControlPlane) -> None:
    sub, rest = (args[0], args[1:]) if args else ("", [])
    if sub in ("list", "ls", "show"):
        values, _ = _parse_flags(rest, {"--user": "user", "-u": "user"})
        nodes = control.headscale_nodes()
        user = values.get("user")
        if user:
            if not any(u["name"] == user for u in control.headscale_users()):
                raise CommandError("listing nodes: rpc error: code = Unknown desc = user not found")
            nodes = [
                n for n in nodes if (n.get("HeadscaleUser") or {}).get("name") == user and not n.get("Tags")
            ]
        listed = [_node_json(node, listed=True) for node in nodes]
        if values.get("output"):
            _print(listed, "", values["output"])
            return
        print("ID | Hostname | Name | User | Tags | IP addresses | Connected")
        for node in listed:
            print(
                f"{node['id']} | {node['name']} | {node['given_name']} | {(node.get('user') or {}).get('name', '')} | "
                f"{','.join(node.get('tags', []))} | {','.join(node['ip_addresses'])} | "
                f"{'online' if node.get('online') else 'offline'}"
            )
    elif sub in ("delete", "del"):
        values, _ = _parse_flags(rest, {"--identifier": "identifier", "-i": "identifier"})
        node_id = _uint(values, "identifier", required=True)
        found = next((n for n in control.headscale_nodes() if n["HeadscaleID"] == node_id), None)
        if found is None:
            raise CommandError("getting node: rpc error: code = NotFound desc = node not found")
        output = values.get("output", "")
        if not values.get("force") and not _confirmed(f"Do you want to remove the node {found['HostName']}?"):
            _print({"Result": "Node not deleted"}, "Node not deleted", output)
            return
        if not control.delete_headscale_node(node_id):
            raise CommandError("deleting node: rpc error: code = NotFound desc = node not found")
        _print({"Result": "Node deleted"}, "Node deleted", output)
    elif sub in ("tag", "tags", "t"):
        values, _ = _parse_flags(
            rest, {"--identifier": "identifier", "-i": "identifier", "--tags": "tags", "-t": "tags"}
        )
        node_id = _uint(values, "identifier", required=True)
        tags: list[str] = values["tags"]
        if not tags:
            raise CommandError(
                "setting tags: rpc error: code = InvalidArgument desc = cannot remove all tags from a node - "
                "tagged nodes must have at least one tag"
            )
        for tag in tags:
            problem = _tag_problem(tag)
            if problem:
                raise CommandError(f"setting tags: rpc error: code = Unknown desc = {problem}")
        try:
            control.set_headscale_tags(node_id, tags)
        except LookupError as error:
            raise CommandError(f"setting tags: rpc error: code = NotFound desc = {error}") from None
        except ValueError as error:
            raise CommandError(f"setting tags: rpc error: code = InvalidArgument desc = {error}") from None
        node = next(n for n in control.headscale_nodes() if n["HeadscaleID"] == node_id)
        _print(_node_json(node, listed=False), "Node updated", values.get("output", ""))
    else:
        raise CommandError(f'unknown command "{sub}" for "headscale nodes"')


def _confirmed(prompt: str) -> bool:
    """`util.YesNo`: the question on stderr, yes only for y, yes or sure on stdin."""
    print(f"{prompt} [y/n] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes", "sure")


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
        elif command in ("nodes", "node"):
            _nodes(rest, control)
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
