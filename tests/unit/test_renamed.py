"""Verify tells a node the tailnet named `desk-1` because another device holds `desk` (a reinstalled host)."""

from __future__ import annotations

import pytest

from tailnix.operations import renamed
from tailnix.settings import parse_settings


def _status(hostname: str, dns_name: str) -> dict[str, object]:
    return {"BackendState": "Running", "Self": {"HostName": hostname, "DNSName": dns_name}}


@pytest.mark.parametrize(
    ("data", "hostname", "dns_name", "given"),
    [
        ({}, "nixos-1", "nixos-1.tailnet-lab.ts.net.", None),
        ({}, "nixos-1", "nixos-1-1.tailnet-lab.ts.net.", "nixos-1-1"),
        ({}, "Desk", "desk-2.tailnet-lab.ts.net.", "desk-2"),
        ({}, "desk-1", "desk-1.tailnet-lab.ts.net.", None),
        ({"tailscale_hostname": "web"}, "nixos-1", "web-1.tailnet-lab.ts.net.", "web-1"),
        ({"tailscale_hostname": "web"}, "nixos-1", "web.tailnet-lab.ts.net.", None),
        ({}, "nixos-1", "", None),
    ],
)
def test_a_suffixed_name_is_told(
    data: dict[str, object], hostname: str, dns_name: str, given: str | None
) -> None:
    assert renamed(parse_settings("desk", data), _status(hostname, dns_name)) == given
