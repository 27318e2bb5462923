"""Re-tagging a Running node, end to end on a lab host: the plan says so, the deploy logs in again behind
the switch's magic rollback, and a tag control refuses puts the host back as it was.

What the real system does, read in tailscale v1.90.6:
- `cmd/tailscale/cli/up.go`: `up` edits prefs without a login only when Running, without an auth key,
  without `--force-reauth` and with the same tags and login server; `--force-reauth` calls
  `StartLoginInteractive` also when an auth key is given (line 644).
- `control/controlclient/direct.go` (`doLogin`): an interactive login sets `regen`, so the node asks with
  a new node key and its old one as `OldNodeKey`, from the same machine key: control re-registers the
  same machine (same node, same addresses). A refusal comes back as `RegisterResponse.Error` and is
  returned as a `UserVisibleError` before the new key is kept: the node is logged out with the control's
  words as its last login error ("requested tags [tag:x] are invalid or not permitted" for a tag the
  key's owner does not own in `tagOwners`, the lab's `control.tags_refusal`).

Two fresh hosts, one reached as root and one as a non-root admin with sudo, bootstrapped with tag:server;
the tests run in order: dry run, retag to tag:web, retag to a tag the admin does not own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tailnix import paths
from tailnix_lab.emulator.control import ControlPlane
from tailnix_lab.hosts import Lab

from .deploying import SUDO_USER, etc_nixos
from .test_fleet import Fleet, new_fleet

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def tagged(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two fresh hosts (root, sudo), Running with tag:server, joined with a reusable key of the admin's."""
    directory = tmp_path_factory.mktemp("retag-fleet")
    hosts = [lab.add_host(os="nixos"), lab.add_host(os="nixos", sudo_user=SUDO_USER)]
    key = ControlPlane(lab.layout.control).mint_key(reusable=True)
    created = new_fleet(lab, directory, hosts, key)
    created.write_inventory(**{h.name: {"tailscale_advertise_tags": ["tag:server"]} for h in hosts})
    bootstrapped = created.tailnix("bootstrap", *(h.name for h in hosts), "-i", "inventory.py")
    assert bootstrapped.returncode == 0, bootstrapped.stdout + bootstrapped.stderr
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


def _status(lab: Lab, host: str) -> dict[str, object]:
    return dict(json.loads(lab.ssh(host, "tailscale status --json --peers=false").stdout))


def _self(lab: Lab, host: str) -> dict[str, object]:
    status = _status(lab, host)
    assert isinstance(status["Self"], dict)
    return dict(status["Self"])


def _generation(lab: Lab, host: str) -> str:
    return lab.ssh(host, "readlink /run/current-system").stdout.strip()


def _number(generation: str) -> int:
    """N of a generation's link (`.../system-N-link`)."""
    return int(generation.rsplit("/", 1)[1].split("-")[1])


def _retag(fleet: Fleet, *tags: str) -> None:
    fleet.write_inventory(**{h.name: {"tailscale_advertise_tags": list(tags)} for h in fleet.hosts})


def test_dry_run_names_the_re_authentication(tagged: Fleet, lab: Lab) -> None:
    names = [host.name for host in tagged.hosts]
    _retag(tagged, "tag:web")
    before = {name: etc_nixos(lab, name) for name in names}

    dry = tagged.tailnix("deploy", "-i", "inventory.py", "--dry")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for name in names:
        line = next(line for line in dry.stdout.splitlines() if line.startswith(f"{name}: "))
        assert "re-authenticate: tags tag:server -> tag:web" in line
        assert "nixos-rebuild switch" in line

    # pyinfra's own dry run names it for each host too.
    plain = tagged.pyinfra_dry()
    assert plain.returncode == 0, plain.stderr
    for name in names:
        assert f"[{name}] re-authenticate: tags tag:server -> tag:web" in plain.stdout + plain.stderr
        assert etc_nixos(lab, name) == before[name]
        assert _self(lab, name)["Tags"] == ["tag:server"]


def test_retag_changes_the_granted_tags_of_the_same_node(tagged: Fleet, lab: Lab) -> None:
    names = [host.name for host in tagged.hosts]
    _retag(tagged, "tag:web")
    nodes_before = {name: _self(lab, name) for name in names}
    generations = {name: _generation(lab, name) for name in names}

    deployed = tagged.tailnix("deploy", "-i", "inventory.py")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    for name in names:
        node = _self(lab, name)
        assert _status(lab, name)["BackendState"] == "Running"
        assert node["Tags"] == ["tag:web"]
        # The same machine logged in again: the same node and addresses.
        before = nodes_before[name]
        assert (node["ID"], node["TailscaleIPs"]) == (before["ID"], before["TailscaleIPs"])
        # One switch: the next generation.
        assert _number(_generation(lab, name)) == _number(generations[name]) + 1
    switched = {name: _generation(lab, name) for name in names}

    # A second deploy changes nothing.
    again = tagged.tailnix("deploy", "-i", "inventory.py")
    assert again.returncode == 0, again.stdout + again.stderr
    dry = tagged.tailnix("deploy", "-i", "inventory.py", "--dry").stdout
    for name in names:
        assert _generation(lab, name) == switched[name] and _self(lab, name)["Tags"] == ["tag:web"]
        assert f"{name}: nothing to do" in dry


def test_a_tag_the_key_owner_does_not_own_is_refused_and_the_host_is_put_back(
    tagged: Fleet, lab: Lab
) -> None:
    names = [host.name for host in tagged.hosts]
    nodes_before = {name: _self(lab, name) for name in names}
    assert all(node["Tags"] == ["tag:web"] for node in nodes_before.values())
    generations = {name: _generation(lab, name) for name in names}
    files = {name: etc_nixos(lab, name) for name in names}
    _retag(tagged, "tag:db")

    deployed = tagged.tailnix("deploy", "-i", "inventory.py")

    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    lines = (deployed.stdout + deployed.stderr).splitlines()
    for name in names:
        # The host, the tag and control's words, on one line.
        assert any(
            name in line
            and "tag:db" in line
            and "requested tags [tag:db] are invalid or not permitted" in line
            for line in lines
        ), lines
        # Back as it was: the old configuration, /etc/nixos, and the node Running with its old tags.
        assert _generation(lab, name) == generations[name]
        assert etc_nixos(lab, name) == files[name]
        assert _status(lab, name)["BackendState"] == "Running"
        node = _self(lab, name)
        assert node["Tags"] == ["tag:web"] and node["ID"] == nodes_before[name]["ID"]
        # The join unit's journal on the host says it too.
        journal = lab.ssh(name, f"journalctl -u {paths.AUTOCONNECT_UNIT} --no-pager").stdout
        assert "login failed: requested tags [tag:db] are invalid or not permitted" in journal
