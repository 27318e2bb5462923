"""`tailscale up` with an OAuth client secret: the CLI exchanges it for an auth key through the API.

After tailscale v1.90.6 `feature/oauthkey/oauthkey.go` (`resolveAuthKey`), which `cmd/tailscale/cli/up.go`
calls on its start path, before `Start`, with the auth key and `strings.Split(upArgs.advertiseTags, ",")`:

- a value that does not start with `tskey-client-` is returned unchanged;
- no tags: "oauth authkeys require --advertise-tags" (from `up` the list is never empty: splitting ""
  gives [""], and the API refuses that tag instead);
- the value is cut at `?`; the attributes may be `ephemeral` (default true), `preauthorized` (default
  false) and `baseURL` (default https://api.tailscale.com), anything else is "unknown attribute";
- the client credentials flow (`golang.org/x/oauth2/clientcredentials`, client id "some-client-id", which
  the API ignores: the secret names its client) gets a token at `BASE/api/v2/oauth/token`, and
  `CreateKey` asks `BASE/api/v2/tailnet/-/keys` for a single-use key with the tags and no expiry of its
  own; a refusal is `client/tailscale`'s `ErrResponse`: `Status: 400, Message: "..."`.

The lab has no internet: the default base URL is the lab's stand-in API, whose address it writes into
the control plane's directory while it runs (`API_URL_FILE`); without it the call fails as an
unreachable host does.
"""

from __future__ import annotations

from tailnix_lab.emulator.hostroot import control_dir

OAUTH_PREFIX = "tskey-client-"
DEFAULT_BASE_URL = "https://api.tailscale.com"
API_URL_FILE = "api-url"
"""In the control plane's directory: where the lab's stand-in for DEFAULT_BASE_URL listens."""
CLIENT_ID = "some-client-id"  # what the real CLI sends; the secret names the client


class ResolveError(Exception):
    """The key could not be resolved; `str()` is what `tailscale up` prints."""


def _parse_bool(name: str, value: str, default: bool) -> bool:
    if value == "":
        return default
    # Go's strconv.ParseBool.
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ResolveError(f"invalid attribute boolean attribute {name} value {value!r}")


def resolve_auth_key(value: str, tags: list[str]) -> str:
    """The auth key to log in with: `value` itself, or one minted with the OAuth client it holds."""
    if not value.startswith(OAUTH_PREFIX):
        return value
    if not tags:
        raise ResolveError("oauth authkeys require --advertise-tags")
    import json
    import urllib.parse

    client_secret, _, named = value.partition("?")
    attrs = urllib.parse.parse_qs(named, keep_blank_values=True)
    for name in attrs:
        if name not in ("ephemeral", "preauthorized", "baseURL"):
            raise ResolveError(f"unknown attribute {name!r}".replace("'", '"'))

    def first(name: str) -> str:
        return attrs.get(name, [""])[0]

    ephemeral = _parse_bool("ephemeral", first("ephemeral"), True)
    preauthorized = _parse_bool("preauthorized", first("preauthorized"), False)
    base_url = first("baseURL") or DEFAULT_BASE_URL
    token = _token(_reachable(base_url), base_url, client_secret)
    caps = {
        "devices": {
            "create": {
                "reusable": False,
                "ephemeral": ephemeral,
                "preauthorized": preauthorized,
                "tags": tags,
            }
        }
    }
    keys_url = f"{base_url}/api/v2/tailnet/-/keys"
    status, answer = _post(
        _reachable(base_url) + "/api/v2/tailnet/-/keys",
        keys_url,
        body=json.dumps({"capabilities": caps}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    if status != 200:
        raise ResolveError(f"Status: {status}, Message: {str(answer.get('message', ''))!r}".replace("'", '"'))
    return str(answer.get("key", ""))


def _reachable(base_url: str) -> str:
    """Where a request for `base_url` goes in the lab: the stand-in API for the default one."""
    if base_url != DEFAULT_BASE_URL:
        return base_url
    try:
        return (control_dir() / API_URL_FILE).read_text().strip()
    except OSError:
        return ""


def _token(reachable: str, base_url: str, client_secret: str) -> str:
    import base64

    token_url = f"{base_url}/api/v2/oauth/token"
    basic = base64.b64encode(f"{CLIENT_ID}:{client_secret}".encode()).decode()
    status, answer = _post(
        reachable + "/api/v2/oauth/token" if reachable else "",
        token_url,
        body=b"grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        # golang.org/x/oauth2's RetrieveError, wrapped by the HTTP client as the keys call's error.
        raise ResolveError(
            f'Post "{base_url}/api/v2/tailnet/-/keys": oauth2: "{answer.get("error", "")}" '
            f'"{answer.get("error_description", "")}"'
        )
    return str(answer.get("access_token", ""))


def _post(url: str, shown_url: str, *, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    import json
    import urllib.error
    import urllib.request

    if not url:
        host = shown_url.split("/")[2]
        raise ResolveError(f'Post "{shown_url}": dial tcp: lookup {host}: no such host')
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        raise ResolveError(f'Post "{shown_url}": {getattr(error, "reason", error)}') from None
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        answer = {}
    return status, answer if isinstance(answer, dict) else {}
