"""The lab's `headscale` command on an other-OS host: the CLI contract of headscale v0.29.2.

Source: headscale v0.29.2 `cmd/headscale/cli/preauthkeys.go` (`create`: `--user` a numeric ID, `--reusable`,
`--ephemeral`, `--expiration` default 1h, `--tags` a string slice; the key printed by `printOutput`),
`cmd/headscale/cli/users.go` (`list`), `cmd/headscale/cli/utils.go` (`formatOutput`: JSON indented with tabs;
`printError`: `Error: ...` or `{"error": ...}` with `-o json`; `expirationFromFlag`: a Prometheus duration),
`cmd/headscale/cli/root.go` (`Execute`: exit 1), `hscontrol/db/preauth_keys.go` (`hskey-auth-` + 12-char prefix
+ `-` + 64-char secret), `hscontrol/db/users.go` (`ErrUserNotFound`: "user not found"), `hscontrol/grpcv1.go`
(`validateTag`), and the JSON names of `gen/go/headscale/v1/preauthkey.pb.go` and `user.pb.go`.
"""

from __future__ import annotations

import json
import re
import time

from tailnix_lab.hosts import Lab, LabHost

KEY_SHAPE = re.compile(r"hskey-auth-[A-Za-z0-9_-]{12}-[A-Za-z0-9_-]{64}")


def _user_id(lab: Lab, host: str, name: str) -> int:
    users = json.loads(lab.ssh(host, "headscale users list -o json").stdout)
    return int(next(user["id"] for user in users if user["name"] == name))


def _with_headscale_key(lab: Lab, name: str, user: str) -> None:
    """Give NixOS host `name` tailscaled and, in /root/hs.key, a single-use key of a new headscale user."""
    lab.ssh("debian-1", f"headscale users create {user}")
    user_id = _user_id(lab, "debian-1", user)
    key = json.loads(lab.ssh("debian-1", f"headscale preauthkeys create -u {user_id} -o json").stdout)["key"]
    lab.ssh(name, "echo '{ services.tailscale.enable = true; }' > /etc/nixos/tailscale.nix")
    lab.ssh(name, "sed -i 's|./hardware-configuration.nix|& ./tailscale.nix|' /etc/nixos/configuration.nix")
    lab.ssh(name, "nixos-rebuild switch")
    lab.ssh(name, "umask 077; cat > /root/hs.key", input=key)


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


def test_a_new_node_asking_for_tags_with_a_headscale_key_is_refused(
    lab: Lab, clean_nixos_host: LabHost
) -> None:
    """headscale v0.29.2 `hscontrol/state/state.go`: "PreAuthKey nodes get their tags from the key itself";
    a new node's `RequestTags` with a pre-auth key fail with `requested tags [...] are invalid or not permitted`."""
    name = clean_nixos_host.name
    _with_headscale_key(lab, name, "tagging")
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
