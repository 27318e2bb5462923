"""The auth key's lifecycle: rotating it in the secrets file, and checking the file a cron job can trust.

The key is written with `sops set --value-stdin`. Beside it, two fields stay in clear because their names
end in the file's `unencrypted_suffix` (sops' default `_unencrypted`): when the key was set and when it
expires, so `tailnix check` can warn without any key:

    tailscale_auth_key: ENC[AES256_GCM,...]
    tailscale_auth_key_set_unencrypted: "2026-11-28"
    tailscale_auth_key_expires_unencrypted: "2027-02-26"
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from tailnix.fleet import FleetHost, SecretsLocation
from tailnix.keyform import ENV_PREFIX, bare_key, key_kind
from tailnix.secrets_file import (
    NEVER,
    ClearSecretError,
    date_fields,
    missing_file,
    never_expires,
    read_sealed,
)
from tailnix.sops import NotEncryptedError, SopsError, decrypt_value, encrypt_values, read_metadata, set_value
from tailnix.sops_config import SopsConfig, SopsConfigError

# Tailscale's own auth keys: tskey-auth-<id>-<secret>. Used to find one committed in clear.
AUTH_KEY_PATTERN = r"tskey-(auth|client)-[A-Za-z0-9]{4,}-[A-Za-z0-9]{8,}"
# What must never be committed in clear, as `git grep -E` finds it: what it is -> pattern.
SECRETS_IN_CLEAR = {
    "an auth key": AUTH_KEY_PATTERN,
    "an age private key": r"AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}",
    "an SSH private key": r"-----BEGIN ((OPENSSH|RSA|EC|DSA) )?PRIVATE KEY-----",
}

OK, WARNING, BROKEN = 0, 1, 2


class AuthKeyError(ValueError):
    """A key or a secrets file that cannot be used; the message says why."""


@dataclass(frozen=True)
class KeyDates:
    """When the key in the secrets file was set and when it expires, as recorded beside it."""

    set_on: date | None
    expires: date | None


def _parse_date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def read_dates(location: SecretsLocation) -> KeyDates:
    """The recorded dates of the key (None where nothing, or nothing readable, is recorded)."""
    metadata = read_sealed(location.secrets_file, location.secret_name)
    set_field, expires_field = date_fields(location.secret_name, metadata.unencrypted_suffix)
    return KeyDates(
        _parse_date(metadata.unencrypted.get(set_field)), _parse_date(metadata.unencrypted.get(expires_field))
    )


def normalise_key(text: str) -> str:
    """The bare auth key from what the user typed or piped in (a trailing newline, `TAILSCALE_AUTH_KEY=`)."""
    key = bare_key(text)
    if not key:
        raise AuthKeyError("no auth key was given")
    if any(character.isspace() for character in key):
        raise AuthKeyError("an auth key is one word with no spaces or line breaks")
    if key_kind(key) is None:
        raise AuthKeyError(
            "that is not an auth key: a Tailscale auth key is tskey-auth-<id>-<secret>, an OAuth client "
            "secret tskey-client-<id>-<secret> (optionally ?ephemeral=false&preauthorized=true), a headscale "
            "pre-auth key hskey-auth-<prefix>-<secret> (or 48 hex digits in older releases)"
        )
    return key


def rotate_key(
    location: SecretsLocation, key: str, *, expires: date | None, today: date | None = None
) -> KeyDates:
    """Write a new auth key into the secrets file, with its set and expiry dates in clear beside it.

    The key keeps the form the file already used (bare, or `TAILSCALE_AUTH_KEY=...`). A missing file is
    created, for the recipients of the `.sops.yaml` rule that covers it. `expires` is None for an OAuth
    client secret, which does not expire (recorded as `never`). All writes go to a private copy that
    replaces the file only when every write succeeded.
    """
    today = today or date.today()
    if expires is not None and expires <= today:
        raise AuthKeyError(f"the expiry date {expires} is not in the future")
    path = location.secrets_file
    value = key if not path.exists() else _in_current_form(location, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        if path.exists():
            shutil.copyfile(path, temporary)
            os.chmod(temporary, 0o600)
            set_value(temporary, location.secret_name, value, config=location.sops_config)
        else:
            # A first secrets file: encrypted by the rule of .sops.yaml that covers its real name.
            encrypt_values(
                {location.secret_name: value}, target=temporary, config=location.sops_config, rule_for=path
            )
        suffix = read_sealed(temporary, location.secret_name).unencrypted_suffix
        set_field, expires_field = date_fields(location.secret_name, suffix)
        set_value(temporary, set_field, today.isoformat(), config=location.sops_config)
        recorded = expires.isoformat() if expires is not None else NEVER
        set_value(temporary, expires_field, recorded, config=location.sops_config)
        try:
            written = read_sealed(temporary, location.secret_name)
        except NotEncryptedError as error:
            raise AuthKeyError(f"{error}; {path} was left as it was") from None
        if set(written.unencrypted) < {set_field, expires_field}:
            raise AuthKeyError(
                f"sops encrypted {expires_field}; the file's encrypted_regex or suffix settings keep it "
                "from being stored in clear"
            )
        os.replace(temporary, path)
    except (SopsError, NotEncryptedError) as error:
        outcome = "was left as it was" if path.exists() else "was not created"
        raise AuthKeyError(f"{error}; {path} {outcome}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return KeyDates(today, expires)


def _in_current_form(location: SecretsLocation, key: str) -> str:
    """`key` in the form the file already holds its key: bare, or `TAILSCALE_AUTH_KEY=...`."""
    try:
        read_sealed(location.secrets_file, location.secret_name)
    except (NotEncryptedError, OSError) as error:
        raise AuthKeyError(str(error)) from None
    try:
        current = decrypt_value(location.secrets_file, location.secret_name)
    except SopsError as error:
        raise AuthKeyError(
            f"cannot decrypt {location.secrets_file} to keep its format ({error}); set SOPS_AGE_KEY_FILE "
            "to the admin age key"
        ) from None
    return ENV_PREFIX + key if current.startswith(ENV_PREFIX) else key


# --- check ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One result of `tailnix check`: 0 fine, 1 warning, 2 expired or broken."""

    level: int
    message: str


def check_expiry(location: SecretsLocation, *, warn_days: int, today: date | None = None) -> list[Finding]:
    """Is the file encrypted, does it hold the key, and how long until the key expires."""
    today = today or date.today()
    if not location.secrets_file.exists():
        return [Finding(BROKEN, missing_file(location.secrets_file))]
    try:
        metadata = read_sealed(location.secrets_file, location.secret_name)
    except (NotEncryptedError, OSError) as error:
        return [Finding(BROKEN, str(error))]
    if location.secret_name not in metadata.keys:
        return [Finding(BROKEN, f"{location.secrets_file} has no key {location.secret_name!r}")]
    if never_expires(metadata, location.secret_name):
        return [Finding(OK, "the secret is an OAuth client secret: OAuth clients do not expire")]
    dates = read_dates(location)
    if dates.expires is None:
        return [
            Finding(WARNING, "the auth key's expiry is not recorded; record it with `tailnix rotate-key`")
        ]
    left = (dates.expires - today).days
    if left < 0:
        return [
            Finding(
                BROKEN,
                f"the auth key expired on {dates.expires} ({-left} days ago): new hosts cannot join; "
                "run `tailnix rotate-key`",
            )
        ]
    if left <= warn_days:
        return [
            Finding(
                WARNING, f"the auth key expires on {dates.expires}, in {left} days; run `tailnix rotate-key`"
            )
        ]
    return [Finding(OK, f"the auth key expires on {dates.expires}, in {left} days")]


OAUTH_SECRET_NAMES = ("tailscale_oauth_client_secret",)


def check_no_oauth_client(location: SecretsLocation) -> list[Finding]:
    """The hosts' secrets file must not hold an OAuth client: every host can decrypt that file."""
    try:
        keys = read_metadata(location.secrets_file).keys
    except (NotEncryptedError, OSError):
        return []  # check_expiry says why
    held = [name for name in keys if name in OAUTH_SECRET_NAMES]
    if held:
        return [
            Finding(
                WARNING,
                f"{location.secrets_file} holds {', '.join(held)}: every host can decrypt that file and mint "
                "keys with it; keep the OAuth client in a sops file for the admins only (`rotate-key "
                "--oauth-file`) or in the environment",
            )
        ]
    return []


def check_recipients(location: SecretsLocation, hosts: list[FleetHost]) -> list[Finding]:
    """Is every host's recorded recipient one the file is encrypted for, and does the file match `.sops.yaml`."""
    if not location.secrets_file.exists():
        return []  # check_expiry says what to do
    try:
        config = SopsConfig.read(location.sops_config, location.secrets_file)
        has = set(read_metadata(location.secrets_file).recipients)
    except (SopsConfigError, NotEncryptedError, OSError) as error:
        return [Finding(BROKEN, str(error))]
    findings = []
    for host in hosts:
        recorded = config.named(host.name)
        if recorded is None:
            findings.append(
                Finding(
                    BROKEN, f"{host.name} has no recipient in .sops.yaml; run `tailnix bootstrap {host.name}`"
                )
            )
        elif recorded not in has:
            findings.append(
                Finding(
                    BROKEN,
                    f"{host.name}'s recipient cannot open the file; run `tailnix bootstrap {host.name}`",
                )
            )
    wanted = {r.recipient for r in config.recipients()}
    if wanted - has:
        findings.append(
            Finding(
                BROKEN, "the file is not encrypted for every recipient of .sops.yaml; run `sops updatekeys`"
            )
        )
    if has - wanted:
        findings.append(
            Finding(
                WARNING,
                "the file is still encrypted for recipients .sops.yaml no longer lists; "
                "run `tailnix forget NAME` or `sops updatekeys`",
            )
        )
    if not findings:
        findings.append(Finding(OK, f"every host of the {len(hosts)} checked can open the secrets file"))
    return findings


def check_git(location: SecretsLocation) -> list[Finding]:
    """Does the git repository holding the secrets track any secret in clear."""
    directory = location.secrets_file.parent
    top = subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "--show-toplevel"],
        capture_output=True,
        text=True,
        check=False,
    )
    if top.returncode != 0:
        return [Finding(OK, f"{directory} is not in a git repository")]
    root = Path(top.stdout.strip())
    tracked = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, text=True, check=True
    ).stdout.split("\0")
    findings = []
    covered = _covered_patterns(location)
    config_dir = location.sops_config.resolve().parent
    for name in filter(None, tracked):
        path = (root / name).resolve()
        try:
            relative = path.relative_to(config_dir).as_posix()
        except ValueError:
            continue
        is_secrets = path == location.secrets_file.resolve()
        if (is_secrets or any(re.search(p, relative) for p in covered)) and path.is_file():
            try:
                if is_secrets:
                    read_sealed(path, location.secret_name)
                else:
                    read_metadata(path)
            except ClearSecretError:
                findings.append(
                    Finding(BROKEN, f"git tracks {name}, which holds values in clear (see above)")
                )
            except NotEncryptedError:
                findings.append(Finding(BROKEN, f"git tracks {name} in clear; encrypt it with sops"))
    for what, pattern in SECRETS_IN_CLEAR.items():
        grep = subprocess.run(
            ["git", "-C", str(root), "grep", "-I", "-l", "-E", "-e", pattern],
            capture_output=True,
            text=True,
            check=False,
        )
        for name in grep.stdout.split():
            findings.append(Finding(BROKEN, f"git tracks {what} in clear in {name}"))
    if not findings:
        findings.append(Finding(OK, "git tracks no secret in clear"))
    return findings


def _covered_patterns(location: SecretsLocation) -> list[str]:
    try:
        document: Any = yaml.safe_load(location.sops_config.read_text())
    except (OSError, yaml.YAMLError):
        return []
    rules = document.get("creation_rules") if isinstance(document, dict) else None
    return [
        str(rule["path_regex"])
        for rule in rules or []
        if isinstance(rule, dict) and isinstance(rule.get("path_regex"), str)
    ]
