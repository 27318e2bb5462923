"""A reinstalled host (its Tailscale state lost) joins again while its old device is still on the tailnet.

What the real system does: control gives a node whose name another device of the tailnet holds that name
with a suffix (`desk-1`; tailscale/tailscale #4778), in `Self.DNSName` of `tailscale status --json`
(`ipn/ipnstate/ipnstate.go`). The lab's control does the same (`ControlPlane._unique_dns_name`). Without
an API client the deploy cannot delete the old device, so verify says the name it got, and why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tailnix_lab.hosts import Lab

from .test_fleet import Fleet, bootstrapped_fleet

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def reinstalled(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A host bootstrapped, Running, then its /var/lib/tailscale wiped with tailscaled stopped."""
    directory = tmp_path_factory.mktemp("reinstall-fleet")
    created = bootstrapped_fleet(lab, directory)
    hosts = created.hosts
    lab.ssh(
        hosts[0].name,
        "systemctl stop tailscaled && rm -rf /var/lib/tailscale && systemctl start tailscaled",
    )
    yield created
    for host in created.hosts:
        lab.stop_host(host.name)


def test_without_an_api_client_the_deploy_names_the_suffixed_name(reinstalled: Fleet, lab: Lab) -> None:
    name = reinstalled.hosts[0].name
    # The new daemon answers NoState while it starts, then NeedsLogin: a node that never logged in.
    waited = lab.ssh(
        name,
        "for _ in $(seq 60); do s=$(tailscale status --json --peers=false | jq -r .BackendState); "
        '[ "$s" != NoState ] && break; sleep 0.5; done; echo "$s"',
    )
    assert waited.stdout.strip() == "NeedsLogin"

    deployed = reinstalled.tailnix("deploy", "-i", "inventory.py")

    assert deployed.returncode == 1, deployed.stdout + deployed.stderr
    line = next(line for line in deployed.stdout.splitlines() if f"] {name}: " in line)
    assert (
        f"but the tailnet named it {name}-1, not {name}: another device of the tailnet holds {name}" in line
    )
    own = json.loads(lab.ssh(name, "tailscale status --json --peers=false").stdout)["Self"]
    assert own["DNSName"].startswith(f"{name}-1.")
