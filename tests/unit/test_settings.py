"""Settings validation: every bad value is named with its host and setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tailnix.settings import SettingsError, parse_settings


def test_defaults_follow_the_original_recipe() -> None:
    settings = parse_settings("desk", {})
    assert settings.mode == "autoconnect"
    assert settings.up_flags() == ["--accept-routes"]
    assert settings.routing_features() is None
    assert settings.secret_name == "tailscale_auth_key"


def test_full_settings_map_to_up_flags_in_a_stable_order() -> None:
    settings = parse_settings(
        "gw",
        {
            "tailscale_accept_routes": False,
            "tailscale_advertise_routes": ["10.0.0.0/24", "fd00::/64"],
            "tailscale_advertise_exit_node": True,
            "tailscale_advertise_tags": ["tag:router", "tag:home"],
            "tailscale_hostname": "gw-1",
            "tailscale_ssh": True,
            "tailscale_login_server": "https://hs.example.com",
            "tailscale_extra_up_flags": ["--accept-dns=false"],
        },
    )
    assert settings.up_flags() == [
        "--accept-routes=false",
        "--advertise-routes=10.0.0.0/24,fd00::/64",
        "--advertise-exit-node",
        "--advertise-tags=tag:router,tag:home",
        "--hostname=gw-1",
        "--ssh",
        "--login-server=https://hs.example.com",
        "--accept-dns=false",
    ]
    assert settings.routing_features() == "server"


def test_relative_secrets_file_resolves_against_base_dir(tmp_path: Path) -> None:
    settings = parse_settings("desk", {"tailnix_secrets_file": "s/t.yaml"}, base_dir=tmp_path)
    assert settings.secrets_file == tmp_path / "s" / "t.yaml"


BAD: list[tuple[str, Any, str]] = [
    ("tailscale_advertise_tags", ["router"], "tag:name"),
    ("tailscale_advertise_tags", "tag:router", "list of strings"),
    ("tailscale_advertise_routes", ["10.0.0.1/24"], "has non-address bits set"),
    ("tailscale_advertise_routes", ["10.0.0.0/33"], "prefix length out of range"),
    ("tailscale_advertise_routes", ["lan"], "not a valid IP address or CIDR prefix"),
    ("tailscale_hostname", "web_1", "DNS label"),
    ("tailscale_hostname", "a" * 64, "DNS label"),
    ("tailscale_hostname", "x; rm -rf /", "DNS label"),
    ("tailscale_login_server", "hs.example.com", "http(s) URL"),
    ("tailscale_login_server", "https://hs.example.com/$(id)", "http(s) URL"),
    ("tailscale_accept_routes", "yes", "True or False"),
    ("tailscale_ssh", 1, "True or False"),
    ("tailnix_mode", "magic", "autoconnect, native"),
    ("tailscale_extra_up_flags", ["--auth-key=file:/k"], "set by tailnix"),
    ("tailscale_extra_up_flags", ["--hostname=x"], "tailscale_hostname"),
    ("tailscale_extra_up_flags", ["--accept-dns=false; reboot"], "shell characters"),
    ("tailscale_extra_up_flags", ["accept-dns"], "--flag"),
    ("tailnix_secret_name", "tail scale", "plain key name"),
    ("tailnix_sops_nix_sha256", "abc", "Nix sha256"),
    ("tailnix_sops_nix_url", 'https://x/"; evil', "quotes"),
    ("tailnix_sops_nix_url", "ftp://x/y.tar.gz", "tarball URL"),
    ("tailnix_verify_timeout", 0, "seconds"),
    ("tailscale_advertise_route", ["10.0.0.0/24"], "did you mean tailscale_advertise_routes"),
]


@pytest.mark.parametrize(("key", "value", "reason"), BAD, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD])
def test_bad_value_names_host_setting_and_value(key: str, value: Any, reason: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings("router-7", {key: value})
    message = str(raised.value)
    assert message.startswith(f"host router-7: {key} = ")
    assert reason in message
    shown = repr(value[0]) if isinstance(value, list) and key != "tailscale_advertise_route" else None
    if shown and "list of strings" not in reason:
        assert shown in message
