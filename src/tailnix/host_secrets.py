"""One secrets file per host: each encrypted for the admins and that host alone.

With `tailnix_secrets_file = "secrets/hosts/{host}.yaml"` every host receives its own file, so the bytes a
host is sent stay the same whatever the size of the fleet, and a host's SSH key opens its own file and no
other. The admins keep their own copy of the key (`secrets/hosts/admins.yaml`, for them alone): it is what
`rotate-key` writes first and what `bootstrap` gives a new host. `.sops.yaml` has a rule per file, anchored
to it, whose one key group is the admins and that host:

    keys:
      - &admin age1...
      - &desk age1...
    creation_rules:
      - path_regex: '^secrets/hosts/desk\\.yaml$'
        key_groups:
          - age:
              - *admin
              - *desk
      - path_regex: '^secrets/hosts/admins\\.yaml$'
        key_groups:
          - age:
              - *admin

Every file is written by the real `sops` (`sops encrypt`, the values on its stdin), as a whole: a file for
a host is a new encryption of the admins' copy's values, never a copy of another host's bytes.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from tailnix.adminkey import sops_age_key_file
from tailnix.authkey import BROKEN, OK, WARNING, Finding, KeyDates, check_expiry, rotate_key
from tailnix.fleet import FleetError, FleetHost, PerHostSecrets, SecretsLocation
from tailnix.recipients import (
    RecipientChange,
    RecipientUpdate,
    in_order,
    key_changed,
    read_recipients,
    recorded_change,
)
from tailnix.secrets_file import date_fields, missing_file, read_sealed, recorded_expiry
from tailnix.settings import HOST_PLACEHOLDER
from tailnix.sops import (
    DEFAULT_UNENCRYPTED_SUFFIX,
    NotEncryptedError,
    SopsError,
    decrypt_value,
    encrypt_values,
    read_metadata,
)
from tailnix.sops_config import (
    HostRules,
    SopsConfig,
    SopsConfigError,
    has_own_rule,
    with_admins_rule,
    write_config,
)


@dataclass(frozen=True)
class KeyValues:
    """What every host's file holds: the key (in the form the admins' copy holds it) and its dates."""

    key: str
    set_on: str | None
    expires: str | None
    """An ISO date, `never` (an OAuth client secret), or None when not recorded."""

    def document(self, secret_name: str) -> dict[str, str]:
        set_field, expires_field = date_fields(secret_name, DEFAULT_UNENCRYPTED_SUFFIX)
        values = {secret_name: self.key}
        if self.set_on is not None:
            values[set_field] = self.set_on
        if self.expires is not None:
            values[expires_field] = self.expires
        return values


def _clear_text(value: object) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, date) else str(value)


def read_key_values(location: SecretsLocation) -> KeyValues:
    """Decrypt the key of `location` with the admin age key, and read its dates in clear."""
    try:
        metadata = read_sealed(location.secrets_file, location.secret_name)
        key = decrypt_value(location.secrets_file, location.secret_name)
    except (NotEncryptedError, OSError) as error:
        raise FleetError(str(error)) from None
    except SopsError as error:
        raise FleetError(
            f"cannot decrypt {location.secrets_file} ({error}); sops needs an admin age key: SOPS_AGE_KEY_FILE"
        ) from None
    set_field, expires_field = date_fields(location.secret_name, metadata.unencrypted_suffix)
    return KeyValues(
        key,
        _clear_text(metadata.unencrypted.get(set_field)),
        _clear_text(metadata.unencrypted.get(expires_field)),
    )


def write_host_file(location: SecretsLocation, values: KeyValues) -> None:
    """Encrypt `values` into the host's file, for the recipients of its rule; the old file stays on failure."""
    path = location.secrets_file
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        encrypt_values(
            values.document(location.secret_name),
            target=temporary,
            config=location.sops_config,
            rule_for=path,
        )
        written = read_sealed(temporary, location.secret_name)
        wanted = set(values.document(location.secret_name)) - {location.secret_name}
        if not wanted <= set(written.unencrypted):
            raise FleetError(
                f"sops encrypted the key's dates in {path}: the rule for it in .sops.yaml must not set "
                "encrypted_regex or an unencrypted_suffix other than _unencrypted"
            )
        os.replace(temporary, path)
    except (SopsError, NotEncryptedError) as error:
        raise FleetError(f"{error}; {path} was left as it was") from None
    finally:
        temporary.unlink(missing_ok=True)


def _parallel(work: Callable[[str], None], hosts: list[str]) -> dict[str, str]:
    """Run `work` for each host on a few threads (each runs sops); the hosts it failed for, and why."""
    failed: dict[str, str] = {}

    def one(host: str) -> None:
        try:
            work(host)
        except FleetError as error:
            failed[host] = str(error)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(one, hosts))
    return failed


def _rules(layout: PerHostSecrets) -> HostRules:
    try:
        return HostRules(layout.sops_config.read_text(), layout.relative(layout.admin_copy.secrets_file))
    except OSError as error:
        raise FleetError(f"cannot read {layout.sops_config}: {error.strerror}") from None
    except SopsConfigError as error:
        raise FleetError(
            f"{layout.sops_config}: {error}; a fleet with one secrets file per host needs a rule for the "
            f"admins' copy, {layout.relative(layout.admin_copy.secrets_file)}"
        ) from None


# --- rotate-key -------------------------------------------------------------------------------------


@dataclass
class PerHostRotation:
    """What rotate-key did: the key's dates, the hosts whose file has it, and the hosts it said about."""

    dates: KeyDates
    written: list[str] = field(default_factory=list)
    without_recipient: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def rotate_per_host(
    layout: PerHostSecrets, fleet: list[FleetHost], key: str, *, expires: date | None
) -> PerHostRotation:
    """Put a new key in the admins' copy, then in the file of every host that has a rule in `.sops.yaml`."""
    admin_copy = layout.admin_copy
    _rules(layout)  # no key is written for a .sops.yaml that cannot give the hosts their files
    dates = rotate_key(admin_copy, key, expires=expires)
    values = read_key_values(admin_copy)
    rules = _rules(layout)
    rotation = PerHostRotation(dates)
    recorded = []
    for host in fleet:
        if rules.recipients_of(layout.relative(layout.file_of(host.name))) is None:
            rotation.without_recipient.append(host.name)
        else:
            recorded.append(host.name)
    rotation.failed = _parallel(lambda name: write_host_file(layout.location_of(name), values), recorded)
    rotation.written = [name for name in recorded if name not in rotation.failed]
    return rotation


# --- bootstrap --------------------------------------------------------------------------------------


def _key_source(layout: PerHostSecrets, fleet: list[FleetHost]) -> SecretsLocation:
    """Where a new host's file gets the key: the admins' copy, else the file of a host that has one."""
    if layout.admin_copy.secrets_file.is_file():
        return layout.admin_copy
    for host in fleet:
        if layout.file_of(host.name).is_file():
            return layout.location_of(host.name)
    raise FleetError(missing_file(layout.admin_copy.secrets_file))


def bootstrap_per_host(
    inventory_file: Path,
    hosts: list[FleetHost],
    fleet: list[FleetHost],
    layout: PerHostSecrets,
    *,
    replace_key: bool,
) -> RecipientUpdate:
    """Give each host a rule of its own in `.sops.yaml` and its own file, with the current key.

    The key comes from the admins' copy (or another host's file), decrypted with the admin age key. A
    host whose key differs from the recipient recorded under its name is refused unless `replace_key`.
    A second run changes nothing. `.sops.yaml` and the files are put back if sops fails.
    """
    source = _key_source(layout, fleet)
    try:
        read_sealed(source.secrets_file, source.secret_name)
    except NotEncryptedError as error:
        raise FleetError(f"refusing to give the hosts the key of {source.secrets_file}: {error}") from None
    before = _rules(layout)
    text = before.text
    source_dates = _clear_dates(source)
    update = RecipientUpdate()
    to_write = []
    new: list[tuple[str, str, str]] = []
    for host, recipient in read_recipients(inventory_file, hosts, update).items():
        path = layout.relative(layout.file_of(host))
        recorded = before.named(host)
        refused = key_changed(host, recorded, recipient, replace_key=replace_key)
        if refused is not None:
            update.changes.append(refused)
            continue
        wanted = [r.recipient for r in before.admins()] + [recipient]
        has_rule = before.recipients_of(path)
        if recorded == recipient and has_rule == wanted:
            if (
                _encrypted_for(layout.file_of(host)) == set(wanted)
                and _clear_dates(layout.location_of(host)) == source_dates
            ):
                update.changes.append(
                    RecipientChange(host, "unchanged", "already has its own file", recipient)
                )
                continue
            update.changes.append(RecipientChange(host, "rewritten", "its file written again", recipient))
            to_write.append(host)
        elif has_rule is not None:
            # A rule of its own with another key (a replaced host key): that rule alone is edited.
            try:
                text = HostRules(text, before.admins_path).with_host(path, host, recipient)
            except SopsConfigError as error:
                update.changes.append(RecipientChange(host, "failed", str(error)))
                continue
            update.changes.append(recorded_change(host, recorded, recipient))
            to_write.append(host)
        else:
            new.append((path, host, recipient))
    # New rules in one edit of .sops.yaml; if that is refused, one by one, to name the hosts it is refused for.
    try:
        text = HostRules(text, before.admins_path).with_hosts(new) if new else text
        added = new
    except SopsConfigError:
        added = []
        for entry in new:
            try:
                text = HostRules(text, before.admins_path).with_hosts([entry])
                added.append(entry)
            except SopsConfigError as error:
                update.changes.append(RecipientChange(entry[1], "failed", str(error)))
    for _, host, recipient in added:
        update.changes.append(recorded_change(host, before.named(host), recipient))
        to_write.append(host)
    in_order(update, hosts)
    update.config_changed = text != before.text
    if not to_write:
        return update
    values = read_key_values(source)
    originals = {name: _read_or_none(layout.file_of(name)) for name in to_write}
    if update.config_changed:
        write_config(layout.sops_config, text)
    failed = _parallel(lambda name: write_host_file(layout.location_of(name), values), to_write)
    if failed:
        write_config(layout.sops_config, before.text)
        for name, original in originals.items():
            _put_back(layout.file_of(name), original)
        raise FleetError(
            "; ".join(f"{name}: {reason}" for name, reason in failed.items())
            + f"; {layout.sops_config.name} and the hosts' files were left as they were"
        )
    update.secrets_reencrypted = True
    update.files_written = [layout.file_of(name) for name in to_write]
    return update


def _encrypted_for(path: Path) -> set[str] | None:
    try:
        return set(read_metadata(path).recipients)
    except (NotEncryptedError, OSError):
        return None


def _read_or_none(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _put_back(path: Path, original: bytes | None) -> None:
    if original is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(original)


# --- forget -----------------------------------------------------------------------------------------


def forget_per_host(layout: PerHostSecrets, name: str) -> RecipientUpdate:
    """Remove the host's rule (and its anchor, if no other rule uses it) and delete its file."""
    rules = _rules(layout)
    path = layout.file_of(name)
    try:
        text = rules.without_host(layout.relative(path), name)
    except SopsConfigError as error:
        raise FleetError(f"{layout.sops_config}: {error}") from None
    recorded = rules.named(name)
    write_config(layout.sops_config, text)
    update = RecipientUpdate([RecipientChange(name, "removed", "rule and recipient removed", recorded)])
    update.config_changed = True
    if path.is_file():
        path.unlink()
        update.files_deleted = [path]
    return update


def recipient_per_host(layout: PerHostSecrets, name: str) -> str | None:
    """The host's recipient, when it has a rule of its own in `.sops.yaml`; None otherwise."""
    if not layout.sops_config.is_file():
        return None
    rules = _rules(layout)
    if rules.rule_of(layout.relative(layout.file_of(name))) is None:
        return None
    return rules.named(name)


# --- check ------------------------------------------------------------------------------------------


def check_per_host(layout: PerHostSecrets, hosts: list[FleetHost], *, warn_days: int) -> list[Finding]:
    """Each host's own file: there, sealed, for exactly the admins and that host, with the admins' key."""
    findings = [
        Finding(f.level, f"the admins' copy: {f.message}")
        for f in check_expiry(layout.admin_copy, warn_days=warn_days)
    ]
    try:
        rules = _rules(layout)
    except FleetError as error:
        return [*findings, Finding(BROKEN, str(error))]
    admins = [r.recipient for r in rules.admins()]
    admins_dates = _clear_dates(layout.admin_copy)
    today = date.today()
    problems = []
    sound: list[str] = []
    for host in hosts:
        path = layout.file_of(host.name)
        wanted = rules.recipients_of(layout.relative(path))
        recorded = rules.named(host.name)
        if wanted is None or recorded is None:
            problems.append(
                Finding(
                    BROKEN,
                    f"{host.name} has no rule of its own in .sops.yaml; run `tailnix bootstrap {host.name}`",
                )
            )
            continue
        if not path.is_file():
            problems.append(
                Finding(
                    BROKEN, f"{host.name} has no secrets file ({path}); run `tailnix bootstrap {host.name}`"
                )
            )
            continue
        try:
            metadata = read_sealed(path, layout.secret_name)
        except (NotEncryptedError, OSError) as error:
            problems.append(Finding(BROKEN, f"{host.name}: {error}"))
            continue
        has = set(metadata.recipients)
        if has != set(admins) | {recorded}:
            others = sorted(has - set(admins) - {recorded})
            missing = sorted(set(admins) - has) + ([] if recorded in has else [recorded])
            said = [f"also for {', '.join(others)}"] if others else []
            said += [f"not for {', '.join(missing)}"] if missing else []
            problems.append(
                Finding(
                    BROKEN,
                    f"{host.name}'s file is not encrypted for exactly the admins and {host.name} "
                    f"({'; '.join(said)}); run `tailnix bootstrap {host.name}`",
                )
            )
            continue
        sound.append(host.name)
        expires = recorded_expiry(metadata, layout.secret_name)
        if expires is not None and expires < today:
            problems.append(
                Finding(
                    BROKEN,
                    f"{host.name}'s file holds a key that expired on {expires}; run `tailnix rotate-key`",
                )
            )
        elif metadata.unencrypted != admins_dates:
            problems.append(
                Finding(
                    WARNING,
                    f"{host.name}'s file holds another key than the admins' copy (set or expiring on other "
                    "dates); run `tailnix rotate-key`, or `tailnix bootstrap "
                    f"{host.name}` to give it the admins' key",
                )
            )
    if not problems:
        problems.append(
            Finding(
                OK,
                f"every host of the {len(hosts)} checked has its own secrets file, encrypted for the admins "
                "and itself only",
            )
        )
    return findings + problems + _compare_keys(layout, sound)


def _admin_key_here() -> bool:
    return bool(os.environ.get("SOPS_AGE_KEY")) or sops_age_key_file().is_file()


def _compare_keys(layout: PerHostSecrets, hosts: list[str]) -> list[Finding]:
    """With an admin age key on this machine: each host's file opens with it and holds the admins' key.

    Without one, nothing is decrypted (check needs no key) and one line says so.
    """
    if not hosts or not layout.admin_copy.secrets_file.is_file():
        return []
    if not _admin_key_here():
        return [Finding(OK, "no admin age key here: the hosts' files were checked by their sops blocks only")]
    try:
        wanted = read_key_values(layout.admin_copy).key
    except FleetError as error:
        return [Finding(BROKEN, f"the admins' copy: {error}")]
    differ: list[str] = []

    def compare(name: str) -> None:
        if read_key_values(layout.location_of(name)).key != wanted:
            differ.append(name)

    failed = _parallel(compare, hosts)
    found = [Finding(BROKEN, f"{name}: {reason}") for name, reason in sorted(failed.items())]
    found += [
        Finding(
            WARNING,
            f"{name}'s file holds another key than the admins' copy; run `tailnix bootstrap {name}` to give it "
            "the admins' key, or `tailnix rotate-key`",
        )
        for name in sorted(differ)
    ]
    return found or [
        Finding(OK, f"each of the {len(hosts)} files opens with the admin age key and holds the admins' key")
    ]


def _clear_dates(location: SecretsLocation) -> dict[str, Any]:
    """The values a file keeps in clear (the key's dates): the same in every file written from it."""
    try:
        return dict(read_metadata(location.secrets_file).unencrypted)
    except (NotEncryptedError, OSError):
        return {}


# --- moving a fleet from one shared file ------------------------------------------------------------

SETTING_LINE = re.compile(r"^tailnix_secrets_file\s*=.*$", re.MULTILINE)


@dataclass
class Split:
    """What `tailnix secrets split` did."""

    written: list[Path] = field(default_factory=list)
    without_recipient: list[str] = field(default_factory=list)
    config_changed: bool = False


def split_shared(shared: SecretsLocation, layout: PerHostSecrets, fleet: list[FleetHost]) -> Split:
    """Write the admins' copy and a file per host from the shared file; the shared file is not touched.

    The admins are the recipients of the shared file's rule not named after an inventory host. A host
    that is not a recipient of the shared file gets no file (bootstrap gives it one afterwards).
    """
    if not shared.secrets_file.is_file():
        raise FleetError(missing_file(shared.secrets_file))
    try:
        config = SopsConfig.read(shared.sops_config, shared.secrets_file)
        text = config.text
        names = {host.name for host in fleet}
        admins = [r for r in config.recipients() if r.name not in names]
        if not admins:
            raise FleetError(f"{shared.sops_config}: the rule for {shared.secrets_file} names no admin")
        admins_path = layout.relative(layout.admin_copy.secrets_file)
        if not has_own_rule(text, admins_path):
            text = with_admins_rule(text, admins_path, admins)
        split = Split()
        entries = []
        for host in fleet:
            recipient = config.named(host.name)
            if recipient is None or recipient not in {r.recipient for r in config.recipients()}:
                split.without_recipient.append(host.name)
                continue
            entries.append((layout.relative(layout.file_of(host.name)), host.name, recipient))
        present = HostRules(text, admins_path)
        for entry in [e for e in entries if present.rule_of(e[0]) is not None]:  # split before: kept
            text = HostRules(text, admins_path).with_host(*entry)
        fresh = [e for e in entries if present.rule_of(e[0]) is None]
        text = HostRules(text, admins_path).with_hosts(fresh) if fresh else text
    except SopsConfigError as error:
        raise FleetError(f"{shared.sops_config}: {error}") from None
    values = read_key_values(shared)
    split.config_changed = text != config.text
    if split.config_changed:
        write_config(shared.sops_config, text)
    write_host_file(layout.admin_copy, values)
    hosts = [h.name for h in fleet if h.name not in split.without_recipient]
    failed = _parallel(lambda name: write_host_file(layout.location_of(name), values), hosts)
    if failed:
        raise FleetError("; ".join(f"{name}: {reason}" for name, reason in failed.items()))
    split.written = [layout.admin_copy.secrets_file] + [layout.file_of(name) for name in hosts]
    return split


def setting_line(template: str) -> str:
    """The line of group_data/all.py that selects one file per host."""
    return f"tailnix_secrets_file = {template!r}".replace("'", '"')


def write_setting(all_py: Path, template: str) -> None:
    """Set `tailnix_secrets_file` in group_data/all.py to `template` (the line replaced, or added)."""
    if HOST_PLACEHOLDER not in template:
        raise FleetError(f"{template} has no {HOST_PLACEHOLDER}")
    text = all_py.read_text() if all_py.is_file() else ""
    line = setting_line(template)
    if SETTING_LINE.search(text):
        text = SETTING_LINE.sub(lambda _match: line, text, count=1)
    else:
        text = text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"
    all_py.parent.mkdir(parents=True, exist_ok=True)
    all_py.write_text(text)
