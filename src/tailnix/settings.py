"""A host's Tailscale settings: read from pyinfra host data, validated, typed.

Every check happens here, on the workstation, before any host is touched; an error names the host, the
setting and the bad value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pyinfra.api.exceptions import DeployError

from tailnix.prefix import PrefixError, calc_advertise_routes, parse_route
from tailnix.tailnet_names import hostname_error, tag_error
from tailnix.tailscale_flags import (
    ALIASES,
    AUTO_UPDATE_UNSUPPORTED,
    BOOL_VALUES,
    BY_NAME,
    SET_FLAGS,
    TAILSCALE_CONTROL_URLS,
    TAILSCALE_RELEASE,
)

Mode = Literal["autoconnect", "native"]
MODES: tuple[Mode, ...] = ("autoconnect", "native")

# The pin of sops-nix the generated module fetches; override with tailnix_sops_nix_url/_sha256.
DEFAULT_SOPS_NIX_URL = (
    "https://github.com/Mic92/sops-nix/archive/56b24064fdcaedca53553b1a6d607fd23b613a24.tar.gz"
)
DEFAULT_SOPS_NIX_SHA256 = "1f0j45mxb2zv672icpfvi7vnz8l4ccgxlkg79jca8avg00lj9gz3"
DEFAULT_SECRET_NAME = "tailscale_auth_key"
DEFAULT_SECRETS_FILE = "secrets/tailscale.yaml"
HOST_PLACEHOLDER = "{host}"
"""In `tailnix_secrets_file`, the inventory name of the host: one secrets file per host."""
PER_HOST_SECRETS_FILE = f"secrets/hosts/{HOST_PLACEHOLDER}.yaml"
"""The layout `tailnix init` gives a new fleet: each host's file encrypted for the admins and that host."""
ADMIN_COPY_NAME = "admins"
"""What `{host}` becomes for the admins' own copy of the key, which hosts bootstrapped later receive."""

_NIX_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NIX_BASE32_SHA256 = re.compile(r"^[0-9abcdfghijklmnpqrsvwxyz]{52}$")
_SRI_SHA256 = re.compile(r"^sha256-[A-Za-z0-9+/]{43}=$")
# A flag tailscale up accepts: --name or --name=value, with a value free of shell metacharacters.
_EXTRA_FLAG = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:/@+=%-]*)?$")
# Flags tailnix sets itself from the settings above: naming them again in extra flags is a mistake.
_MANAGED_FLAGS = {
    "--accept-routes": "tailscale_accept_routes",
    "--advertise-routes": "tailscale_advertise_routes",
    "--advertise-exit-node": "tailscale_advertise_exit_node",
    "--advertise-tags": "tailscale_advertise_tags",
    "--hostname": "tailscale_hostname",
    "--ssh": "tailscale_ssh",
    "--login-server": "tailscale_login_server",
    "--auth-key": "the sops secrets file",
    "--authkey": "the sops secrets file",
    "--reset": "tailnix (it always passes the full flag set)",
    "--timeout": "tailnix_up_timeout",
}
# What looks like a key in a message: Tailscale keys, age identities, and runs of 24 or more base64
# characters with upper and lower case letters (two of each) and digits, as random secrets have. Hashes
# (sha256-..., Nix base32, hex commits) and URL paths are not secret and stay.
_SECRET_LOOKING = re.compile(
    r"(tskey-[A-Za-z]+-)[A-Za-z0-9_-]+"
    r"|(AGE-SECRET-KEY-)[0-9A-Za-z]+"
    r"|(?<![A-Za-z0-9+/_-])(?!sha256-|sha512-)"
    r"(?=(?:[A-Z0-9+/_-]*[a-z]){2})(?=(?:[a-z0-9+/_-]*[A-Z]){2})(?=[A-Za-z+/_-]*[0-9])"
    r"[A-Za-z0-9+/_-]{24,}={0,2}"
)


def redact_secrets(text: str) -> str:
    """`text` with every key-looking value replaced by `[redacted]` (its tskey-/AGE- prefix kept)."""
    return _SECRET_LOOKING.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", text)


class SettingsError(DeployError):
    """A setting with a bad value; the message names the host, the setting and the value (keys redacted)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_secrets(message))


@dataclass(frozen=True)
class SopsNixPin:
    """Where the generated module fetches sops-nix from, and the NAR hash that pins it."""

    url: str
    sha256: str


@dataclass(frozen=True)
class TailscaleSettings:
    """Everything that decides what one host receives."""

    host: str
    mode: Mode = "autoconnect"
    accept_routes: bool = True
    advertise_routes: tuple[str, ...] = ()
    advertise_exit_node: bool = False
    advertise_tags: tuple[str, ...] = ()
    hostname: str | None = None
    ssh: bool = False
    login_server: str | None = None
    extra_up_flags: tuple[str, ...] = ()
    set_prefs: tuple[tuple[str, bool | str], ...] = ()
    """`tailscale_set`: (flag, value) of the prefs only `tailscale set` changes, applied after `up`."""
    key_expiry: bool = True
    """Whether the node key expires (Tailscale's default); False disables it through the Tailscale API."""
    replace_offline_device: bool = True
    """Before a node that is not logged in joins, delete an offline device of its name through the API."""
    secret_name: str = DEFAULT_SECRET_NAME
    secrets_file: Path = Path(DEFAULT_SECRETS_FILE)
    """This host's encrypted file (with `{host}` of a per-host template replaced by the host's name)."""
    secrets_template: Path | None = None
    """The per-host template (`secrets/hosts/{host}.yaml`), resolved; None for a file the fleet shares."""
    sops_nix: SopsNixPin = field(
        default_factory=lambda: SopsNixPin(DEFAULT_SOPS_NIX_URL, DEFAULT_SOPS_NIX_SHA256)
    )
    up_timeout: int = 60
    verify_timeout: int = 60
    lock_timeout: int = 120
    confirm_timeout: int = 60
    flake_attr: str | None = None
    """For a host configured by a flake: its `nixosConfigurations` name (the host's hostname if None)."""

    @property
    def on_headscale(self) -> bool:
        """Whether the node logs in to a headscale server: a login server that is not Tailscale's."""
        return bool(self.login_server) and self.login_server not in TAILSCALE_CONTROL_URLS

    @property
    def requested_tags(self) -> tuple[str, ...]:
        """The tags `tailscale up` asks control for (`--advertise-tags`).

        None on headscale: headscale v0.29.2 (`hscontrol/state/state.go`) refuses a new node that asks for
        tags with a pre-auth key (it gets the key's), and ignores them when a node it knows logs in again;
        there `tailscale_advertise_tags` are set on the server (`headscale nodes tag`) instead.
        """
        return () if self.on_headscale else self.advertise_tags

    def up_flags(self) -> list[str]:
        """The `tailscale up` flags these settings mean, in a stable order (the key is never here)."""
        flags = ["--accept-routes" if self.accept_routes else "--accept-routes=false"]
        if self.advertise_routes:
            flags.append("--advertise-routes=" + ",".join(self.advertise_routes))
        if self.advertise_exit_node:
            flags.append("--advertise-exit-node")
        if self.requested_tags:
            flags.append("--advertise-tags=" + ",".join(self.requested_tags))
        if self.hostname:
            flags.append("--hostname=" + self.hostname)
        if self.ssh:
            flags.append("--ssh")
        if self.login_server:
            flags.append("--login-server=" + self.login_server)
        flags.extend(self.extra_up_flags)
        return flags

    def set_flags(self) -> list[str]:
        """The `tailscale set` flags of `tailscale_set`, in the order given (`--name` or `--name=value`)."""
        flags = []
        for name, value in self.set_prefs:
            if value is True:
                flags.append(f"--{name}")
            else:
                flags.append(f"--{name}={'false' if value is False else value}")
        return flags

    def routing_features(self) -> str | None:
        """NixOS `services.tailscale.useRoutingFeatures` for these settings, or None to leave it alone.

        Advertising routes or an exit node needs IP forwarding ("server"); also using other
        routers' routes needs the loose reverse-path filter too ("both").
        """
        if not (self.advertise_routes or self.advertise_exit_node):
            return None
        return "both" if self.accept_routes else "server"


# host data key -> (attribute, parser)
_KNOWN_KEYS = (
    "tailnix_mode",
    "tailnix_secrets_file",
    "tailnix_secret_name",
    "tailnix_sops_nix_url",
    "tailnix_sops_nix_sha256",
    "tailnix_up_timeout",
    "tailnix_verify_timeout",
    "tailnix_lock_timeout",
    "tailnix_confirm_timeout",
    "tailnix_flake_attr",
    "tailnix_headscale_host",
    "tailnix_headscale_user",
    "tailscale_accept_routes",
    "tailscale_advertise_routes",
    "tailscale_advertise_exit_node",
    "tailscale_advertise_tags",
    "tailscale_hostname",
    "tailscale_ssh",
    "tailscale_login_server",
    "tailscale_extra_up_flags",
    "tailscale_key_expiry",
    "tailscale_set",
    "tailnix_replace_offline_device",
)
# The prefs only `tailscale set` changes (`up` has no flag for them, and its --reset leaves them alone).
SET_ONLY_FLAGS = {flag.name: flag for flag in SET_FLAGS if not flag.up}


class _Reader:
    def __init__(self, host: str, data: Mapping[str, Any]) -> None:
        self.host = host
        self.data = data

    def fail(self, key: str, value: object, reason: str) -> SettingsError:
        return SettingsError(f"host {self.host}: {key} = {value!r}: {reason}")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, value, "must be True or False")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, value, "must be a non-empty string")
        return value

    def text_list(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, ())
        if isinstance(value, str):
            raise self.fail(key, value, f"must be a list of strings, for example [{value!r}]")
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, value, "must be a list of strings")
        return tuple(value)

    def seconds(self, key: str, default: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3600:
            raise self.fail(key, value, "must be a whole number of seconds from 1 to 3600")
        return value


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, with a swap of two neighbours counting as one edit."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]


def _normal_key(key: str) -> str:
    """A host-data key in lower case with `_` for every run of separators."""
    return re.sub(r"[-_.\s]+", "_", key.strip().lower())


# Every host asks for the same keys (pyinfra's own ssh_..., the fleet's group data): about a millisecond
# of edit distances per key, computed once per key and run instead of once per host.
@cache
def _near_setting(key: str) -> str | None:
    """The setting a host-data key was likely meant to be, or None when it is close to none.

    Close means: the same name in another case or with other separators (`Tailscale-SSH`), the other
    prefix or a misspelt one (`tailnix_ssh`, `tailscal_ssh`), or at most two typos (one in a short
    name). Keys of pyinfra itself (`_sudo`, `ssh_user`...) and of other deploys are far from all of them.
    """
    if key.startswith("_"):
        return None
    normal = _normal_key(key)
    if normal in _KNOWN_KEYS:
        return normal
    head, _, core = normal.partition("_")
    prefixed = bool(core) and min(_edit_distance(head, p) for p in ("tailscale", "tailnix")) <= 2
    best: tuple[int, str] | None = None
    for known in _KNOWN_KEYS:
        known_core = known.partition("_")[2]
        distances = [_edit_distance(normal, known)]
        if prefixed:
            distances.append(_edit_distance(core, known_core))
        distance = min(distances)
        if distance <= (1 if len(known_core) <= 5 else 2) and (best is None or distance < best[0]):
            best = (distance, known)
    return best[1] if best else None


def _routes(read: _Reader) -> tuple[str, ...]:
    """`tailscale_advertise_routes`, checked as `tailscale up` checks them, in the CLI's own spelling."""
    key = "tailscale_advertise_routes"
    routes = read.text_list(key)
    canonical: dict[str, None] = {}
    for route in routes:
        try:
            canonical[str(parse_route(route))] = None
        except PrefixError as error:
            reason = f" ({error.reason})" if error.reason else ""
            raise read.fail(key, route, f"tailscale up refuses it: {error.message}{reason}") from None
    try:
        calc_advertise_routes(routes, exit_node=False)
    except PrefixError as error:
        raise read.fail(
            key,
            list(routes),
            f"tailscale up refuses it: {error.message}; or, for an exit node, set tailscale_advertise_exit_node",
        ) from None
    return tuple(canonical)


def _tags(read: _Reader) -> tuple[str, ...]:
    """`tailscale_advertise_tags`, each checked as `tailscale up` checks a tag (`tailcfg.CheckTag`)."""
    key = "tailscale_advertise_tags"
    tags = read.text_list(key)
    for tag in tags:
        error = tag_error(tag)
        if error:
            # The CLI splits its flag on commas; here an item is one tag.
            hint = "; one tag per item" if "," in tag else ""
            raise read.fail(key, tag, f"tailscale up refuses it: {error}{hint}")
    return tags


def _hostname(read: _Reader) -> str | None:
    """`tailscale_hostname`, checked as `tailscale up --hostname` checks it; empty is the OS's host name."""
    key = "tailscale_hostname"
    hostname = read.data.get(key)
    if hostname is None or hostname == "":
        return None
    if not isinstance(hostname, str):
        raise read.fail(key, hostname, "must be a string")
    error = hostname_error(hostname)
    if error:
        raise read.fail(key, hostname, f"tailscale up refuses it: {error}")
    return hostname


def _set_prefs(read: _Reader) -> tuple[tuple[str, bool | str], ...]:
    """`tailscale_set`: a dict of `tailscale set` flag names to values, checked against set's own flags."""
    key = "tailscale_set"
    given = read.data.get(key, {})
    if not isinstance(given, Mapping):
        raise read.fail(key, given, 'must be a dict of tailscale set flags, for example {"webclient": True}')
    prefs: list[tuple[str, bool | str]] = []
    for name, value in given.items():
        flag = SET_ONLY_FLAGS.get(str(name).removeprefix("--"))
        if flag is None:
            also = f"; {name} is a flag of tailscale up: use its own setting" if str(name) in BY_NAME else ""
            raise read.fail(
                key,
                name,
                f"not a flag only tailscale set {TAILSCALE_RELEASE} has (one of {', '.join(SET_ONLY_FLAGS)}){also}",
            )
        if flag.name == "auto-update":
            # set.go refuses --auto-update, true or false, where `clientupdate.CanAutoUpdate()` is false,
            # and clientupdate has no updater for NixOS: the system's generation updates tailscale.
            raise read.fail(
                key,
                name,
                f"tailscale set refuses it on NixOS: {AUTO_UPDATE_UNSUPPORTED} (update tailscale with the system)",
            )
        if flag.kind == "bool":
            if not isinstance(value, bool):
                raise read.fail(key, {name: value}, f"--{flag.name} takes True or False")
        elif flag.name == "relay-server-port":
            # set.go parses it with strconv.ParseUint(..., 10, 16).
            text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if not isinstance(text, str) or not text.isdigit() or int(text) > 65535:
                raise read.fail(key, {name: value}, "--relay-server-port takes a UDP port, 0 to 65535")
            value = str(int(text))
        elif not isinstance(value, str) or not _SET_VALUE.match(value):
            raise read.fail(key, {name: value}, f"--{flag.name} takes a string of letters, digits and ._-")
        prefs.append((flag.name, value))
    return tuple(prefs)


_SET_VALUE = re.compile(r"^[A-Za-z0-9_.-]*$")


def _extra_flag_name(read: _Reader, flag: str) -> str:
    """Check one of `tailscale_extra_up_flags` against `tailscale up` of the pinned release; its name."""
    key = "tailscale_extra_up_flags"
    written = flag.split("=", 1)[0]
    name = ALIASES.get(written[2:], written[2:])
    for spelling in (written, f"--{name}"):
        if spelling in _MANAGED_FLAGS:
            raise read.fail(key, flag, f"{written} is set by tailnix; use {_MANAGED_FLAGS[spelling]}")
    if not _EXTRA_FLAG.match(flag):
        raise read.fail(
            key, flag, "must be --flag or --flag=value, with no spaces, quotes or shell characters"
        )
    if name == "force-reauth":
        raise read.fail(
            key,
            flag,
            "tailnix never passes --force-reauth: it would log the node in again at every start of the "
            "join unit and drop its connections, SSH over Tailscale too; to join hosts with a new key, "
            "use tailnix rotate-key",
        )
    spec = BY_NAME.get(name)
    release = f"tailscale {TAILSCALE_RELEASE}"
    if spec is None:
        near = sorted((_edit_distance(name, f), f) for f in BY_NAME if BY_NAME[f].up)
        hint = f" (did you mean --{near[0][1]}?)" if near and near[0][0] <= 2 else ""
        raise read.fail(
            key,
            flag,
            f"{release} has no such flag: tailscale up would fail with "
            f'"flag provided but not defined: -{name}"{hint}',
        )
    if not spec.up:
        raise read.fail(
            key,
            flag,
            f"--{name} is a flag of tailscale set, not of tailscale up ({release}); tailnix runs "
            "tailscale up only and has no setting for it",
        )
    _, has_value, value = flag.partition("=")
    if spec.takes_value and not has_value:
        raise read.fail(
            key,
            flag,
            f"--{name} takes a value: write --{name}=VALUE (alone, it would take the next flag as its value)",
        )
    if spec.kind == "bool" and has_value and value not in BOOL_VALUES:
        raise read.fail(
            key, flag, f'tailscale up refuses it: invalid boolean value "{value}" for -{name}: parse error'
        )
    if spec.kind == "notfalse" and has_value and value != "true":
        raise read.fail(
            key,
            flag,
            f'tailscale up refuses it: invalid boolean value "{value}" for -{name}: '
            "unsupported value; only 'true' is allowed",
        )
    return name


def host_file(template: Path, name: str) -> Path:
    """The file a per-host `template` gives `name` (a host's inventory name, or ADMIN_COPY_NAME)."""
    return template.with_name(template.name.replace(HOST_PLACEHOLDER, name))


# A name `{host}` may become in a file name and a `.sops.yaml` anchor (PyYAML's anchor characters).
_FILE_SAFE_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def _secrets_file(read: _Reader, base_dir: Path) -> tuple[Path, Path | None]:
    """`tailnix_secrets_file`: this host's file, and the per-host template it comes from (None if shared)."""
    value = read.data.get("tailnix_secrets_file", DEFAULT_SECRETS_FILE)
    if not isinstance(value, str | Path) or not str(value):
        raise read.fail("tailnix_secrets_file", value, "must be a path")
    text = str(value)
    for placeholder in _PLACEHOLDER.findall(text):
        if placeholder != HOST_PLACEHOLDER:
            raise read.fail(
                "tailnix_secrets_file",
                value,
                f"{placeholder} is not a placeholder tailnix knows; the only one is {HOST_PLACEHOLDER} "
                f"(the inventory name), as in {PER_HOST_SECRETS_FILE!r}",
            )
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise read.fail("tailnix_secrets_file", value, f"has a brace that is not part of {HOST_PLACEHOLDER}")
    template = Path(text) if Path(text).is_absolute() else base_dir / text
    if HOST_PLACEHOLDER not in text:
        return template, None
    if HOST_PLACEHOLDER in str(template.parent) or template.name.count(HOST_PLACEHOLDER) != 1:
        raise read.fail(
            "tailnix_secrets_file",
            value,
            f"{HOST_PLACEHOLDER} must appear once, in the file's name (not in a directory), as in "
            f"{PER_HOST_SECRETS_FILE!r}",
        )
    if not _FILE_SAFE_HOST.match(read.host):
        raise read.fail(
            "tailnix_secrets_file",
            value,
            f"{HOST_PLACEHOLDER} would put the inventory name {read.host!r} in a file name and a .sops.yaml "
            "anchor, which take letters, digits, _ and - only; rename the host in the inventory (its "
            "ssh_hostname stays), or give it a tailnix_secrets_file of its own",
        )
    if read.host == ADMIN_COPY_NAME:
        raise read.fail(
            "tailnix_secrets_file",
            value,
            f"{HOST_PLACEHOLDER} of the host {read.host!r} would name the admins' own copy of the key "
            f"({host_file(template, ADMIN_COPY_NAME).name}); rename the host in the inventory",
        )
    return host_file(template, read.host), template


def parse_settings(host: str, data: Mapping[str, Any], *, base_dir: Path | None = None) -> TailscaleSettings:
    """Read and validate one host's settings from its pyinfra data.

    + host: the inventory name, used in error messages
    + data: the host's merged data (`host.data.dict()`)
    + base_dir: where a relative `tailnix_secrets_file` is resolved (the current directory by default)
    """
    read = _Reader(host, data)
    for key in data:
        if key in _KNOWN_KEYS or not isinstance(key, str):
            continue
        if _normal_key(key) == DEFAULT_SECRET_NAME:
            raise read.fail(
                key,
                data[key],
                "the auth key goes in the sops secrets file (tailnix_secrets_file), never in host data",
            )
        meant = _near_setting(key)
        if meant is not None:
            raise read.fail(key, data[key], f"unknown setting (did you mean {meant}?)")
        if key.startswith("tailnix_"):
            raise read.fail(key, data[key], "unknown setting (tailnix_ names are tailnix's own)")

    mode = data.get("tailnix_mode", "autoconnect")
    if mode not in MODES:
        raise read.fail("tailnix_mode", mode, f"must be one of {', '.join(MODES)}")

    routes = _routes(read)

    tags = _tags(read)
    hostname = _hostname(read)

    login_server = read.optional_text("tailscale_login_server")
    if login_server is not None:
        parsed = urlparse(login_server)
        if (
            parsed.scheme not in ("http", "https")
            or not parsed.netloc
            or not _EXTRA_FLAG.match("--x=" + login_server)
        ):
            raise read.fail(
                "tailscale_login_server",
                login_server,
                "must be an http(s) URL like https://hs.example.com",
            )

    extra = read.text_list("tailscale_extra_up_flags")
    given: set[str] = set()
    for flag in extra:
        name = _extra_flag_name(read, flag)
        if name in given:
            raise read.fail(
                "tailscale_extra_up_flags",
                flag,
                f"--{name} is given twice; tailscale up refuses a flag provided multiple times",
            )
        given.add(name)

    secret_name = data.get("tailnix_secret_name", DEFAULT_SECRET_NAME)
    if not isinstance(secret_name, str) or not _SECRET_NAME.match(secret_name):
        raise read.fail(
            "tailnix_secret_name", secret_name, "must be a plain key name like tailscale_auth_key"
        )

    secrets_path, secrets_template = _secrets_file(read, base_dir or Path.cwd())

    pin_url = data.get("tailnix_sops_nix_url", DEFAULT_SOPS_NIX_URL)
    if not isinstance(pin_url, str) or urlparse(pin_url).scheme not in ("https", "http", "file"):
        raise read.fail("tailnix_sops_nix_url", pin_url, "must be an https:// or file:// tarball URL")
    if '"' in pin_url or "${" in pin_url or "\\" in pin_url:
        raise read.fail("tailnix_sops_nix_url", pin_url, "must not contain quotes, backslashes or ${")
    pin_hash = data.get("tailnix_sops_nix_sha256", DEFAULT_SOPS_NIX_SHA256)
    if not isinstance(pin_hash, str) or not (
        _NIX_BASE32_SHA256.match(pin_hash) or _SRI_SHA256.match(pin_hash)
    ):
        raise read.fail(
            "tailnix_sops_nix_sha256",
            pin_hash,
            "must be a Nix sha256 (52 base32 characters, from nix-prefetch-url --unpack)",
        )

    flake_attr = read.optional_text("tailnix_flake_attr")
    if flake_attr is not None and not _NIX_ATTRIBUTE.match(flake_attr):
        raise read.fail(
            "tailnix_flake_attr", flake_attr, "must be a nixosConfigurations name (letters, digits, _ - ')"
        )

    return TailscaleSettings(
        host=host,
        flake_attr=flake_attr,
        mode=mode,
        accept_routes=read.boolean("tailscale_accept_routes", True),
        advertise_routes=routes,
        advertise_exit_node=read.boolean("tailscale_advertise_exit_node", False),
        advertise_tags=tags,
        hostname=hostname,
        ssh=read.boolean("tailscale_ssh", False),
        login_server=login_server,
        extra_up_flags=extra,
        key_expiry=read.boolean("tailscale_key_expiry", True),
        set_prefs=_set_prefs(read),
        replace_offline_device=read.boolean("tailnix_replace_offline_device", True),
        secret_name=secret_name,
        secrets_file=secrets_path,
        secrets_template=secrets_template,
        sops_nix=SopsNixPin(pin_url, pin_hash),
        up_timeout=read.seconds("tailnix_up_timeout", 60),
        verify_timeout=read.seconds("tailnix_verify_timeout", 60),
        lock_timeout=read.seconds("tailnix_lock_timeout", 120),
        confirm_timeout=read.seconds("tailnix_confirm_timeout", 60),
    )
