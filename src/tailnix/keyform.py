"""What the secret must look like to get a host onto the tailnet, checked on the workstation.

The forms `tailscale up --auth-key` takes:

- a Tailscale auth key, `tskey-auth-<id>-<secret>`;
- a Tailscale OAuth client secret, `tskey-client-<id>-<secret>`, optionally followed by the key
  attributes the CLI reads from it (`?ephemeral=false&preauthorized=true`, and `baseURL`; tailscale's
  `feature/oauthkey/oauthkey.go`); the CLI refuses it without `--advertise-tags`;
- with a self-hosted login server, a headscale pre-auth key: `hskey-auth-<prefix>-<secret>` (headscale
  0.26 and later) or 48 hex digits (earlier releases).

The secret may also hold the seed recipe's `TAILSCALE_AUTH_KEY=<key>` form. Messages describe a
secret by its form only, never by its text.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qsl

from tailnix.settings import TailscaleSettings

ENV_PREFIX = "TAILSCALE_AUTH_KEY="
KeyKind = Literal["auth key", "OAuth client secret", "headscale pre-auth key"]

_AUTH_KEY = re.compile(r"tskey-auth-[A-Za-z0-9]+-[A-Za-z0-9]+")
_OAUTH_CLIENT = re.compile(r"tskey-client-[A-Za-z0-9]+-[A-Za-z0-9]+(\?(?P<attributes>[^\s]*))?")
# The attributes tailscale's `feature/oauthkey/oauthkey.go` reads after `?`, and what each takes:
# booleans as Go's strconv.ParseBool reads them, baseURL an http(s) URL.
_GO_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"})
_BASE_URL = re.compile(r"https?://[^\s/?#]+[^\s?#]*")


def _attribute_ok(name: str, value: str) -> bool:
    if name in ("ephemeral", "preauthorized"):
        return value in _GO_BOOLS
    return name == "baseURL" and _BASE_URL.fullmatch(value) is not None


def _oauth_client_form(key: str) -> bool:
    match = _OAUTH_CLIENT.fullmatch(key)
    if match is None:
        return False
    try:
        attributes = parse_qsl(match.group("attributes") or "", keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return match.group("attributes") == ""
    # An empty value is the attribute's default there; an unknown name is refused by the CLI.
    known = ("ephemeral", "preauthorized", "baseURL")
    return all(name in known and (not value or _attribute_ok(name, value)) for name, value in attributes)


_HEADSCALE = re.compile(r"hskey-auth-[A-Za-z0-9_-]+-[A-Za-z0-9_-]+|[0-9a-f]{48}")


def bare_key(secret: str) -> str:
    """The key itself: the secret without surrounding white space or the `TAILSCALE_AUTH_KEY=` prefix."""
    key = secret.strip()
    return key[len(ENV_PREFIX) :] if key.startswith(ENV_PREFIX) else key


def key_kind(key: str) -> KeyKind | None:
    """Which form of key `key` (a bare key) has; None when it has none of them."""
    if _AUTH_KEY.fullmatch(key):
        return "auth key"
    if _oauth_client_form(key):
        return "OAuth client secret"
    if _HEADSCALE.fullmatch(key):
        return "headscale pre-auth key"
    return None


def _shape(key: str) -> str:
    """A description of a key that matches no form, without any of its secret part."""
    if not key:
        return "is empty"
    if any(character.isspace() for character in key):
        return "has spaces or line breaks inside it"
    for prefix in ("tskey-auth-", "tskey-client-", "hskey-auth-"):
        if key.startswith(prefix):
            return f"starts with {prefix!r} but is not {prefix}<id>-<secret>"
    if key.startswith("tskey-"):
        return "starts with 'tskey-' but is neither tskey-auth-<id>-<secret> nor tskey-client-<id>-<secret>"
    return f"is {len(key)} characters that match no form of key"


def key_problem(secret: str, settings: TailscaleSettings) -> str | None:
    """Why `secret` cannot get this host onto its tailnet; None when its form can.

    The sentence follows "the secret NAME in FILE " and never quotes the secret.
    """
    key = bare_key(secret)
    kind = key_kind(key)
    if kind is None:
        return (
            f"{_shape(key)}: tailscale up takes a Tailscale auth key (tskey-auth-...), an OAuth client secret "
            "(tskey-client-...), or with a login server a headscale pre-auth key (hskey-auth-...)"
        )
    if kind == "headscale pre-auth key" and settings.login_server is None:
        return (
            "is a headscale pre-auth key, and this host has no tailscale_login_server: set it to the "
            "headscale URL, or use a Tailscale auth key"
        )
    if kind == "OAuth client secret" and not settings.advertise_tags:
        return (
            "is an OAuth client secret, and tailscale up refuses one without --advertise-tags (an OAuth "
            "client mints tagged keys only), but this host has tailscale_advertise_tags = []: set it, for "
            "example to ['tag:server'], a tag the client may apply"
        )
    return None


def oauth_defaults_warning(secret: str) -> str | None:
    """What an OAuth client secret without its attributes does to a fleet; None for any other secret.

    The CLI mints keys that are ephemeral and not pre-authorized unless the secret says otherwise
    (`feature/oauthkey/oauthkey.go`): an ephemeral node is removed from the tailnet once offline, and one
    not pre-authorized waits for an admin where the tailnet asks for device approval.
    """
    key = bare_key(secret)
    if key_kind(key) != "OAuth client secret":
        return None
    attributes = dict(parse_qsl(key.partition("?")[2], keep_blank_values=True))
    ephemeral = attributes.get("ephemeral") or "true"
    preauthorized = attributes.get("preauthorized") or "false"
    effects = []
    if ephemeral.lower() in ("1", "t", "true"):
        effects.append("ephemeral (removed from the tailnet once offline)")
    if preauthorized.lower() in ("0", "f", "false"):
        effects.append("not pre-authorized (waiting for an admin where the tailnet asks for device approval)")
    if not effects:
        return None
    return (
        f"is an OAuth client secret whose hosts join {' and '.join(effects)}; for a fleet, store it with "
        "?ephemeral=false&preauthorized=true after it"
    )
