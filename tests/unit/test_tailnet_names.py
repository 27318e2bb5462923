"""Tags and host names: the settings and the lab's CLI say of each value what `tailscale up` says.

Source: tailscale v1.90.6 `tailcfg/tailcfg.go` (`CheckTag`), `util/dnsname/dnsname.go` (`ValidHostname`,
`ToFQDN`, `ValidLabel`), `cmd/tailscale/cli/up.go` (`prefsFromUpArgs`, fatal: exit 1).
"""

from __future__ import annotations

import pytest

from tailnix.settings import SettingsError, parse_settings
from tailnix_lab.emulator import tailscale as emulated

from .names_corpus import HOSTNAME_CORPUS, TAG_CORPUS


def _id(value: str) -> str:
    return repr(value) if len(value) < 40 else f"{value[:12]!r}...({len(value.encode())} bytes)"


@pytest.mark.parametrize(("tag", "refusal"), TAG_CORPUS, ids=[_id(t) for t, _ in TAG_CORPUS])
def test_the_settings_and_the_lab_cli_agree_on_tags(tag: str, refusal: str | None) -> None:
    flag = f"tag:ok,{tag}"
    if refusal is None:
        settings = parse_settings("gw", {"tailscale_advertise_tags": ["tag:ok", tag]})
        assert settings.advertise_tags == ("tag:ok", tag)
        emulated.check_names(flag, "")
        return
    with pytest.raises(SettingsError) as settings_error:
        parse_settings("gw", {"tailscale_advertise_tags": ["tag:ok", tag]})
    assert str(settings_error.value) == (
        f"host gw: tailscale_advertise_tags = {tag!r}: tailscale up refuses it: {refusal}"
    )
    with pytest.raises(emulated.CommandFailed) as cli_error:
        emulated.check_names(flag, "")
    assert (cli_error.value.message, cli_error.value.code) == (refusal, 1)


@pytest.mark.parametrize(("hostname", "refusal"), HOSTNAME_CORPUS, ids=[_id(h) for h, _ in HOSTNAME_CORPUS])
def test_the_settings_and_the_lab_cli_agree_on_hostnames(hostname: str, refusal: str | None) -> None:
    if refusal is None:
        settings = parse_settings("gw", {"tailscale_hostname": hostname})
        # Empty is the OS's host name, as for `tailscale up --hostname=`.
        assert settings.hostname == (hostname or None)
        emulated.check_names("", hostname)
        return
    with pytest.raises(SettingsError) as settings_error:
        parse_settings("gw", {"tailscale_hostname": hostname})
    assert str(settings_error.value) == (
        f"host gw: tailscale_hostname = {hostname!r}: tailscale up refuses it: {refusal}"
    )
    with pytest.raises(emulated.CommandFailed) as cli_error:
        emulated.check_names("", hostname)
    assert (cli_error.value.message, cli_error.value.code) == (refusal, 1)


def test_a_tag_list_in_one_item_is_refused_as_one_tag() -> None:
    """The CLI splits its flag on commas; a settings item is one tag, so control would see `tag:a,tag:b`."""
    with pytest.raises(SettingsError) as error:
        parse_settings("gw", {"tailscale_advertise_tags": ["tag:a,tag:b"]})
    assert "tag names can only contain numbers, letters, or dashes" in str(error.value)
    assert "one tag per item" in str(error.value)


def test_an_empty_tag_flag_means_no_tags() -> None:
    emulated.check_names("", "")
    assert parse_settings("gw", {"tailscale_advertise_tags": []}).advertise_tags == ()
