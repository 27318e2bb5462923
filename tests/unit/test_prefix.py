"""Routes read as the Tailscale CLI reads them, the same way by the settings check and the lab's tailscale.

The verdicts and sentences come from Go's `src/net/netip/netip.go` (`ParsePrefix`, `parseIPv4Fields`,
`parseIPv6`, `Addr.String`) and tailscale v1.90.6's `net/netutil/routes.go` (`CalcAdvertiseRoutes`,
`validateViaPrefix`). The last column is what Python's `ipaddress.ip_network(strict=True)` says: where it
differs from Go, only the project's own parser keeps the workstation honest.
"""

from __future__ import annotations

import ipaddress

import pytest

from tailnix.prefix import PrefixError, calc_advertise_routes, parse_prefix
from tailnix.settings import SettingsError, parse_settings
from tailnix_lab.emulator import tailscale as emulated

# text, the CLI's spelling of it or its refusal (with netip's reason), whether Python's ipaddress accepts it
CORPUS: list[tuple[str, str, bool]] = [
    ("10.0.0.0/8", "10.0.0.0/8", True),
    ("192.168.1.0/24", "192.168.1.0/24", True),
    ("fd00::/64", "fd00::/64", True),
    ("FD00:0:0::/64", "fd00::/64", True),
    ("1:0:0:2:0:0:0:3/128", "1:0:0:2::3/128", True),
    ("::1.2.3.4/128", "::102:304/128", True),
    # Go keeps an IPv4-mapped address in dotted form; Python writes ::ffff:a00:0.
    ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104", True),
    ("fd7a:115c:a1e0:b1a:0:7:a00:0/120", "fd7a:115c:a1e0:b1a:0:7:a00:0/120", True),
    # Accepted by Python, refused by Go's netip.ParsePrefix:
    (
        "10.0.0.0/255.0.0.0",
        '"10.0.0.0/255.0.0.0" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("10.0.0.0/255.0.0.0"): bad bits after slash: "255.0.0.0")',
        True,
    ),
    (
        "10.0.0.0/0.255.255.255",
        '"10.0.0.0/0.255.255.255" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("10.0.0.0/0.255.255.255"): bad bits after slash: "0.255.255.255")',
        True,
    ),
    (
        "10.0.0.0/08",
        '"10.0.0.0/08" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("10.0.0.0/08"): bad bits after slash: "08")',
        True,
    ),
    (
        "fd00::/064",
        '"fd00::/064" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("fd00::/064"): bad bits after slash: "064")',
        True,
    ),
    (
        "10.0.0.0",
        '"10.0.0.0" is not a valid IP address or CIDR prefix (netip.ParsePrefix("10.0.0.0"): no \'/\')',
        True,
    ),
    (
        "fe80::%eth0/64",
        '"fe80::%eth0/64" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("fe80::%eth0/64"): IPv6 zones cannot be present in a prefix)',
        True,
    ),
    # Accepted by Python, refused by the CLI's own checks after parsing:
    (
        "fd7a:115c:a1e0:b1a::/64",
        "fd7a:115c:a1e0:b1a::/64 4-in-6 prefix must be at least a /96",
        True,
    ),
    (
        "fd7a:115c:a1e0:b1a:1:0:a00:0/120",
        "route fd7a:115c:a1e0:b1a:1:0:a00:0/120 contains invalid site ID 00010000; must be 0xffff or less",
        True,
    ),
    ("0.0.0.0/0", "0.0.0.0/0 advertised without its IPv6 counterpart, please also advertise ::/0", True),
    ("::/0", "::/0 advertised without its IPv4 counterpart, please also advertise 0.0.0.0/0", True),
    # Refused by both:
    ("10.0.0.1/24", "10.0.0.1/24 has non-address bits set; expected 10.0.0.0/24", False),
    (
        "::ffff:10.0.0.1/104",
        "::ffff:10.0.0.1/104 has non-address bits set; expected ::ffff:10.0.0.0/104",
        False,
    ),
    (
        "010.0.0.0/8",
        '"010.0.0.0/8" is not a valid IP address or CIDR prefix (netip.ParsePrefix("010.0.0.0/8"): '
        'ParseAddr("010.0.0.0"): IPv4 field has octet with leading zero)',
        False,
    ),
    (
        "10.0.0.0/33",
        '"10.0.0.0/33" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("10.0.0.0/33"): prefix length out of range)',
        False,
    ),
    (
        "10.0.0.0/+8",
        '"10.0.0.0/+8" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("10.0.0.0/+8"): bad bits after slash: "+8")',
        False,
    ),
    (
        "1:2:3:4:5:6:7:8::/64",
        '"1:2:3:4:5:6:7:8::/64" is not a valid IP address or CIDR prefix '
        '(netip.ParsePrefix("1:2:3:4:5:6:7:8::/64"): ParseAddr("1:2:3:4:5:6:7:8::"): '
        "the :: must expand to at least one field of zeros)",
        False,
    ),
    (
        "12345::/16",
        '"12345::/16" is not a valid IP address or CIDR prefix (netip.ParsePrefix("12345::/16"): '
        'ParseAddr("12345::"): each group must have 4 or less digits (at "12345::"))',
        False,
    ),
    (
        "1.2.3.4%eth0/32",
        '"1.2.3.4%eth0/32" is not a valid IP address or CIDR prefix (netip.ParsePrefix("1.2.3.4%eth0/32"): '
        'ParseAddr("1.2.3.4%eth0"): unexpected character (at "%eth0"))',
        False,
    ),
    (
        "lan",
        '"lan" is not a valid IP address or CIDR prefix (netip.ParsePrefix("lan"): no \'/\')',
        False,
    ),
]
# The first eight are the ones Go accepts.
GO_ACCEPTS = {text for text, _, _ in CORPUS[:8]}


def _python_accepts(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("text", "outcome", "python"), CORPUS, ids=[c[0] for c in CORPUS])
def test_the_settings_and_the_lab_cli_agree_with_go(
    text: str, outcome: str, python: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _python_accepts(text) is python
    sentence = outcome.split(" (netip.")[0]
    if text in GO_ACCEPTS:
        assert parse_settings("gw", {"tailscale_advertise_routes": [text]}).advertise_routes == (outcome,)
        assert emulated.calc_advertise_routes(text, False) == [outcome]
        return
    with pytest.raises(SettingsError) as settings_error:
        parse_settings("gw", {"tailscale_advertise_routes": [text]})
    assert outcome in str(settings_error.value)
    with pytest.raises(emulated.CommandFailed) as cli_error:
        emulated.calc_advertise_routes(text, False)
    # The CLI itself prints its sentence without netip's reason.
    assert cli_error.value.message == sentence


def test_python_and_go_disagree_on_a_good_part_of_the_corpus() -> None:
    disagreeing = [text for text, _, python in CORPUS if python != (text in GO_ACCEPTS)]
    assert len(disagreeing) >= 10


def test_routes_are_sorted_and_merged_as_the_cli_does() -> None:
    routes = calc_advertise_routes(["fd00::/64", "10.1.0.0/16", "10.1.0.0/16", "::/0", "0.0.0.0/0"], True)
    assert [str(r) for r in routes] == ["0.0.0.0/0", "::/0", "10.1.0.0/16", "fd00::/64"]


def test_an_empty_item_is_refused_like_a_trailing_comma() -> None:
    with pytest.raises(PrefixError) as error:
        calc_advertise_routes(["10.0.0.0/8", ""], False)
    assert error.value.message == '"" is not a valid IP address or CIDR prefix'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.0/", 'netip.ParsePrefix("10.0.0.0/"): bad bits after slash: ""'),
        ("/8", 'netip.ParsePrefix("/8"): ParseAddr(""): unable to parse IP'),
        ("%eth0/8", 'netip.ParsePrefix("%eth0/8"): ParseAddr("%eth0"): missing IPv6 address'),
        ("1.2.3/24", 'netip.ParsePrefix("1.2.3/24"): ParseAddr("1.2.3"): IPv4 address too short'),
        ("1::2::/64", 'netip.ParsePrefix("1::2::/64"): ParseAddr("1::2::"): multiple :: in address (at ":")'),
        (
            "10.0.0.0/99999999999999999999",
            'netip.ParsePrefix("10.0.0.0/99999999999999999999"): bad bits after slash: "99999999999999999999"',
        ),
    ],
)
def test_parse_errors_are_worded_as_go_words_them(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_prefix(text)
    assert str(error.value) == message
