"""The lab's `headscale` command on an other-OS host: the CLI contract of headscale v0.29.2.

Source: headscale v0.29.2 `cmd/headscale/cli/preauthkeys.go` (`create`: `--user` a numeric ID, `--reusable`,
`--ephemeral`, `--expiration` default 1h, `--tags` a string slice; the key printed by `printOutput`),
`cmd/headscale/cli/users.go` (`list`), `cmd/headscale/cli/utils.go` (`formatOutput`: JSON indented with tabs;
`printError`: `Error: ...` or `{"error": ...}` with `-o json`; `expirationFromFlag`: a Prometheus duration),
`cmd/headscale/cli/root.go` (`Execute`: exit 1), `hscontrol/db/preauth_keys.go` (`hskey-auth-` + 12-char prefix
+ `-` + 64-char secret), `hscontrol/db/users.go` (`ErrUserNotFound`: "user not found"), `hscontrol/grpcv1.go`
(`validateTag`), and the JSON names of `gen/go/headscale/v1/preauthkey.pb.go` and `user.pb.go`.

The nodes: `cmd/headscale/cli/nodes.go` (`list [-u USER]`, `delete -i ID` with the root's `--force`, `tag -i ID
-t TAGS`; `-i` a Uint64 marked required), `hscontrol/grpcv1.go` (`nodesToProto`: a tagged node is listed with the
`tagged-devices` user of `hscontrol/types/users.go`; `SetTags`, `DeleteNode`, `GetNode`), `hscontrol/types/node.go`
(`Node.Proto`; `StableID`: the node's ID in decimal is its `Self.ID`), `hscontrol/state/state.go` (`SetNodeTags`:
tags the policy defines; `HandleNodeFromPreAuthKey`: a node that logs in again keeps its tags), and
`gen/go/headscale/v1/node.pb.go`'s JSON names. The keys: `cmd/headscale/cli/preauthkeys.go` (`list` takes no
user in v0.29; `expire --id ID`), `hscontrol/types/preauth_key.go` (`Proto`: a listed key shows its prefix only,
`hskey-auth-PREFIX-***`), `hscontrol/db/preauth_keys.go` (`ExpirePreAuthKey`).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tailnix_lab.hosts import Lab, LabHost

KEY_SHAPE = re.compile(r"hskey-auth-[A-Za-z0-9_-]{12}-[A-Za-z0-9_-]{64}")


def _user_id(lab: Lab, host: str, name: str) -> int:
    users = json.loads(lab.ssh(host, "headscale users list -o json").stdout)
    return int(next(user["id"] for user in users if user["name"] == name))


def _with_headscale_key(lab: Lab, name: str, user: str, *, create: str = "") -> dict[str, Any]:
    """Give NixOS host `name` tailscaled and, in /root/hs.key, a single-use key of a new headscale user (with
    `create`'s flags added); return the key's record as `preauthkeys create -o json` prints it."""
    lab.ssh("debian-1", f"headscale users create {user}")
    user_id = _user_id(lab, "debian-1", user)
    record = json.loads(
        lab.ssh("debian-1", f"headscale preauthkeys create -u {user_id} {create} -o json").stdout
    )
    key = record["key"]
    lab.ssh(name, "echo '{ services.tailscale.enable = true; }' > /etc/nixos/tailscale.nix")
    lab.ssh(name, "sed -i 's|./hardware-configuration.nix|& ./tailscale.nix|' /etc/nixos/configuration.nix")
    lab.ssh(name, "nixos-rebuild switch")
    lab.ssh(name, "umask 077; cat > /root/hs.key", input=key)
    return dict(record)


def test_users_list_shows_a_created_user_with_its_numeric_id(lab: Lab) -> None:
    created = lab.ssh("debian-1", "headscale users create listed")
    assert created.stdout == "User created\n"
    users = json.loads(lab.ssh("debian-1", "headscale users list -o json").stdout)
    [listed] = [user for user in users if user["name"] == "listed"]
    assert isinstance(listed["id"], int) and listed["id"] > 0
    assert set(listed) == {"id", "name", "created_at"}
    assert set(listed["created_at"]) <= {"seconds", "nanos"}


def test_preauthkeys_create_prints_the_key_and_its_record_as_json(lab: Lab) -> None:
    lab.ssh("debian-1", "headscale users create minting")
    user_id = _user_id(lab, "debian-1", "minting")
    before = time.time()
    result = lab.ssh(
        "debian-1",
        f"headscale preauthkeys create --user {user_id} --reusable --expiration 90d --tags tag:server -o json",
    )
    record = json.loads(result.stdout)
    assert list(record) == ["user", "id", "key", "reusable", "expiration", "created_at", "acl_tags"]
    assert record["user"]["id"] == user_id and record["user"]["name"] == "minting"
    assert KEY_SHAPE.fullmatch(record["key"])
    assert record["reusable"] is True and record["acl_tags"] == ["tag:server"]
    days = (record["expiration"]["seconds"] - before) / 86400
    assert 89.9 < days < 90.1
    assert result.stdout.startswith('{\n\t"user"')  # Go's MarshalIndent with a tab
    assert result.stderr == ""


def test_preauthkeys_create_without_output_prints_only_the_key(lab: Lab) -> None:
    lab.ssh("debian-1", "headscale users create plain")
    user_id = _user_id(lab, "debian-1", "plain")
    result = lab.ssh("debian-1", f"headscale preauthkeys create -u {user_id}")
    assert KEY_SHAPE.fullmatch(result.stdout.strip())


def test_an_unknown_user_is_refused_with_exit_1(lab: Lab) -> None:
    result = lab.ssh("debian-1", "headscale preauthkeys create --user 999 --reusable", check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "Error: creating preauthkey: rpc error: code = Unknown desc = user not found\n"
    as_json = lab.ssh("debian-1", "headscale preauthkeys create --user 999 -o json", check=False)
    assert json.loads(as_json.stderr) == {
        "error": "creating preauthkey: rpc error: code = Unknown desc = user not found"
    }


def test_a_user_name_where_the_id_goes_is_a_flag_error(lab: Lab) -> None:
    result = lab.ssh("debian-1", "headscale preauthkeys create --user ops", check=False)
    assert result.returncode == 1
    assert 'invalid argument "ops" for "-u, --user" flag' in result.stderr


def test_bad_expiration_and_bad_tags_are_refused(lab: Lab) -> None:
    lab.ssh("debian-1", "headscale users create strict")
    user_id = _user_id(lab, "debian-1", "strict")
    duration = lab.ssh(
        "debian-1", f"headscale preauthkeys create -u {user_id} --expiration 90days", check=False
    )
    assert (duration.returncode, duration.stderr) == (
        1,
        'Error: parsing duration: not a valid duration string: "90days"\n',
    )
    tag = lab.ssh("debian-1", f"headscale preauthkeys create -u {user_id} --tags server", check=False)
    assert tag.returncode == 1
    assert "desc = tag must start with the string 'tag:'" in tag.stderr


def test_a_minted_key_logs_a_nixos_host_in_through_its_login_server(
    lab: Lab, clean_nixos_host: LabHost
) -> None:
    name = clean_nixos_host.name
    _with_headscale_key(lab, name, "joining")
    up = "tailscale up --login-server=https://hs.example --auth-key=file:/root/hs.key"
    lab.ssh(name, up)
    status = json.loads(lab.ssh(name, "tailscale status --json").stdout)
    assert status["BackendState"] == "Running"
    # Single-use by default: logging in with it again is refused.
    again = lab.ssh(name, f"{up} --force-reauth", check=False)
    assert again.returncode == 1
    assert "not valid" in again.stderr


@pytest.mark.parametrize("create", ["", "--tags tag:server"], ids=["user key", "tagged key"])
def test_a_new_node_asking_for_tags_with_a_headscale_key_is_refused(
    lab: Lab, clean_nixos_host: LabHost, create: str
) -> None:
    """headscale v0.29.2 `hscontrol/state/state.go` (`createAndSaveNewNode`): "PreAuthKey nodes get their tags
    from the key itself"; a new node's `RequestTags` with any pre-auth key, a user's or a tagged one, fail with
    `requested tags [...] are invalid or not permitted`, even the key's own tags."""
    name = clean_nixos_host.name
    _with_headscale_key(lab, name, f"tagging{len(create)}", create=create)
    up = lab.ssh(
        name,
        "tailscale up --login-server=https://hs.example --auth-key=file:/root/hs.key --advertise-tags=tag:server",
        check=False,
    )
    assert up.returncode == 1
    assert "requested tags [tag:server] are invalid or not permitted" in up.stderr


def test_a_tagged_key_needs_no_user(lab: Lab) -> None:
    """headscale v0.29.2 `hscontrol/db/preauth_keys.go` `CreatePreAuthKey`: a key is tagged or owned by a user;
    `--user` left at 0 with `--tags` makes a tagged key of no user, without tags it is refused."""
    tagged = json.loads(lab.ssh("debian-1", "headscale preauthkeys create --tags tag:server -o json").stdout)
    assert "user" not in tagged and tagged["acl_tags"] == ["tag:server"]
    untagged = lab.ssh("debian-1", "headscale preauthkeys create", check=False)
    assert (untagged.returncode, untagged.stderr) == (
        1,
        "Error: creating preauthkey: rpc error: code = Unknown desc = auth-key must be either tagged or owned by user\n",
    )


UP = "tailscale up --login-server=https://hs.example --auth-key=file:/root/hs.key"


def _nodes(lab: Lab, *flags: str) -> list[dict[str, Any]]:
    return list(json.loads(lab.ssh("debian-1", " ".join(["headscale nodes list", *flags, "-o json"])).stdout))


def _joined(lab: Lab, name: str, user: str, *, create: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Log NixOS host `name` in with a new key of a new headscale user; its node as listed, and its `Self`."""
    _with_headscale_key(lab, name, user, create=create)
    lab.ssh(name, UP)
    own = json.loads(lab.ssh(name, "tailscale status --json").stdout)["Self"]
    [node] = [n for n in _nodes(lab) if n["name"] == name]
    return node, own


def test_nodes_list_shows_a_joined_node_as_headscale_lists_it(lab: Lab, clean_nixos_host: LabHost) -> None:
    name = clean_nixos_host.name
    node, own = _joined(lab, name, "lister")
    user_id = _user_id(lab, "debian-1", "lister")
    assert list(node) == [
        "id",
        "machine_key",
        "node_key",
        "disco_key",
        "ip_addresses",
        "name",
        "user",
        "last_seen",
        "pre_auth_key",
        "created_at",
        "register_method",
        "given_name",
        "online",
    ]
    assert own["ID"] == str(node["id"])  # StableID: the node's ID in decimal
    assert node["name"] == name and node["given_name"] == name
    assert node["ip_addresses"] == own["TailscaleIPs"]
    assert node["node_key"] == own["PublicKey"]
    assert node["user"] == {"id": user_id, "name": "lister", "created_at": node["user"]["created_at"]}
    assert node["pre_auth_key"]["key"].endswith("-***") and node["pre_auth_key"]["used"] is True
    assert node["online"] is True and node["register_method"] == 1
    # Filtered by user (a name, as `nodes list -u` takes it); an unknown user is an error.
    assert [n["id"] for n in _nodes(lab, "-u lister")] == [node["id"]]
    unknown = lab.ssh("debian-1", "headscale nodes list -u nobody", check=False)
    assert (unknown.returncode, unknown.stderr) == (
        1,
        "Error: listing nodes: rpc error: code = Unknown desc = user not found\n",
    )


def test_a_node_of_a_tagged_key_is_listed_as_a_tagged_device(lab: Lab, clean_nixos_host: LabHost) -> None:
    node, own = _joined(lab, clean_nixos_host.name, "tagger", create="--tags tag:server")
    assert node["tags"] == ["tag:server"] and own["Tags"] == ["tag:server"]
    assert node["user"] == {
        "id": 2147455555,
        "name": "tagged-devices",
        "created_at": {"seconds": -62135596800},
        "display_name": "Tagged Devices",
    }


def test_nodes_tag_replaces_the_tags_and_the_node_sees_them(lab: Lab, clean_nixos_host: LabHost) -> None:
    name = clean_nixos_host.name
    node, _ = _joined(lab, name, "retagged")
    tagged = lab.ssh("debian-1", f"headscale nodes tag -i {node['id']} -t tag:web,tag:server")
    assert tagged.stdout == "Node updated\n"
    own = json.loads(lab.ssh(name, "tailscale status --json").stdout)["Self"]
    assert own["Tags"] == ["tag:server", "tag:web"]
    [listed] = [n for n in _nodes(lab) if n["id"] == node["id"]]
    assert listed["tags"] == ["tag:server", "tag:web"] and listed["user"]["name"] == "tagged-devices"
    # As JSON, the node as `SetTags` returns it: owned by its tags, no user.
    as_json = json.loads(
        lab.ssh("debian-1", f"headscale nodes tag -i {node['id']} -t tag:web -o json").stdout
    )
    assert as_json["tags"] == ["tag:web"] and "user" not in as_json


def test_nodes_tag_refuses_what_headscale_refuses(lab: Lab, clean_nixos_host: LabHost) -> None:
    node, _ = _joined(lab, clean_nixos_host.name, "refused")
    cases = {
        f"-i {node['id']} -t tag:db": "setting tags: rpc error: code = InvalidArgument desc = requested tags "
        "[tag:db] are invalid or not permitted",
        f"-i {node['id']} -t web": "setting tags: rpc error: code = Unknown desc = tag must start with the "
        "string 'tag:'",
        f"-i {node['id']}": "setting tags: rpc error: code = InvalidArgument desc = cannot remove all tags from "
        "a node - tagged nodes must have at least one tag",
        "-i 99999 -t tag:web": "setting tags: rpc error: code = NotFound desc = node not found",
        "-t tag:web": 'required flag(s) "identifier" not set',
        "-i web -t tag:web": 'invalid argument "web" for "-i, --identifier" flag: strconv.ParseUint: parsing '
        '"web": invalid syntax',
    }
    for flags, error in cases.items():
        result = lab.ssh("debian-1", f"headscale nodes tag {flags}", check=False)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"Error: {error}\n"), flags
    [listed] = [n for n in _nodes(lab) if n["id"] == node["id"]]
    assert "tags" not in listed


def test_nodes_delete_asks_first_and_with_force_deletes(lab: Lab, clean_nixos_host: LabHost) -> None:
    name = clean_nixos_host.name
    node, _ = _joined(lab, name, "deleted")
    asked = lab.ssh("debian-1", f"headscale nodes delete -i {node['id']}", input="n\n")
    assert asked.stdout == "Node not deleted\n"
    assert asked.stderr == f"Do you want to remove the node {name}? [y/n] "
    assert [n["id"] for n in _nodes(lab) if n["id"] == node["id"]] == [node["id"]]
    deleted = lab.ssh("debian-1", f"headscale nodes delete -i {node['id']} --force -o json")
    assert json.loads(deleted.stdout) == {"Result": "Node deleted"}
    assert not [n for n in _nodes(lab) if n["id"] == node["id"]]
    # The host's node is gone from the tailnet: it must log in again.
    state = json.loads(lab.ssh(name, "tailscale status --json").stdout)["BackendState"]
    assert state == "NeedsLogin"
    again = lab.ssh("debian-1", f"headscale nodes delete -i {node['id']} --force", check=False)
    assert (again.returncode, again.stderr) == (
        1,
        "Error: getting node: rpc error: code = NotFound desc = node not found\n",
    )


def test_a_node_logging_in_again_keeps_its_tags_whatever_it_asks_for(
    lab: Lab, clean_nixos_host: LabHost
) -> None:
    """`HandleNodeFromPreAuthKey`: "Tags from PreAuthKey are only applied during initial registration. On
    re-registration the node keeps its existing tags and ownership"; the requested tags are not looked at."""
    name = clean_nixos_host.name
    node, _ = _joined(lab, name, "relogin", create="--reusable")
    lab.ssh("debian-1", f"headscale nodes tag -i {node['id']} -t tag:server")
    up = lab.ssh(name, f"{UP} --force-reauth --advertise-tags=tag:web")
    assert up.returncode == 0
    own = json.loads(lab.ssh(name, "tailscale status --json").stdout)
    assert own["BackendState"] == "Running" and own["Self"]["Tags"] == ["tag:server"]
    assert own["Self"]["ID"] == str(node["id"])


def test_preauthkeys_list_shows_prefixes_and_expire_takes_the_key_id(lab: Lab) -> None:
    lab.ssh("debian-1", "headscale users create expiring")
    user_id = _user_id(lab, "debian-1", "expiring")
    created = json.loads(
        lab.ssh("debian-1", f"headscale preauthkeys create -u {user_id} --reusable -e 30d -o json").stdout
    )
    listed = json.loads(lab.ssh("debian-1", "headscale preauthkeys list -o json").stdout)
    [mine] = [k for k in listed if k["id"] == created["id"]]
    assert mine == {**created, "key": created["key"][: len("hskey-auth-") + 12] + "-***"}
    assert [k["id"] for k in listed] == sorted(k["id"] for k in listed)
    # v0.29 lists every key: `list` takes no user.
    by_user = lab.ssh("debian-1", f"headscale preauthkeys list --user {user_id}", check=False)
    assert (by_user.returncode, by_user.stderr) == (1, "Error: unknown flag: --user\n")
    expired = lab.ssh("debian-1", f"headscale preauthkeys expire --id {created['id']}")
    assert expired.stdout == "Key expired\n"
    [after] = [
        k
        for k in json.loads(lab.ssh("debian-1", "headscale preauthkeys list -o json").stdout)
        if k["id"] == created["id"]
    ]
    assert after["expiration"]["seconds"] <= time.time() < mine["expiration"]["seconds"]
    missing = lab.ssh("debian-1", "headscale preauthkeys expire", check=False)
    assert (missing.returncode, missing.stderr) == (1, "Error: missing --id parameter: missing parameters\n")
