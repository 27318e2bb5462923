"""The hosts' secrets file: what it must keep encrypted, whatever its own sops block declares.

A sops file records in its `sops:` block which values it left in clear (`unencrypted_suffix`,
`unencrypted_regex`, `encrypted_suffix`, `encrypted_regex`, the comment regexes, `mac_only_encrypted`).
That is the file speaking for itself, and a file is not trusted to do that: the file is uploaded to every
host, and a flake host copies it into the world-readable Nix store. So the secret must be an `ENC[...]`
string, and the only values allowed in clear are the two dates tailnix itself records beside the key
(the expiry may be `never`, for an OAuth client secret).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from tailnix.sops import NotEncryptedError, SopsMetadata, encrypted_type, read_metadata

KEY_EXPIRY_WARNING_DAYS = 14
"""How many days before the key's recorded expiry the deploy and `tailnix check` start warning."""


CREATE_COMMAND = "tailnix rotate-key --no-deploy"
"""The one command that creates a missing secrets file (it asks for the auth key without echo)."""


def missing_file(path: Path) -> str:
    """The sentence for a secrets file that does not exist yet."""
    return (
        f"the secrets file {path} does not exist: `{CREATE_COMMAND}` creates it "
        "(it asks for the auth key without echo, or reads it from stdin)"
    )


class ClearSecretError(NotEncryptedError):
    """The secrets file holds something in clear that must not leave the workstation that way."""


def date_fields(secret_name: str, suffix: str) -> tuple[str, str]:
    """The names of the clear fields that record when the secret was set and when it expires."""
    return f"{secret_name}_set{suffix}", f"{secret_name}_expires{suffix}"


NEVER = "never"
"""The expiry recorded for an OAuth client secret: OAuth clients do not expire."""


def never_expires(metadata: SopsMetadata, secret_name: str) -> bool:
    """Whether the secret is recorded as never expiring (an OAuth client secret, set by rotate-key)."""
    _, expires_field = date_fields(secret_name, metadata.unencrypted_suffix)
    return metadata.unencrypted.get(expires_field) == NEVER


def recorded_expiry(metadata: SopsMetadata, secret_name: str) -> date | None:
    """The key's expiry date as recorded in clear beside it; None when none is (or none readable)."""
    _, expires_field = date_fields(secret_name, metadata.unencrypted_suffix)
    value = metadata.unencrypted.get(expires_field)
    if isinstance(value, date):
        return value
    return date.fromisoformat(value) if isinstance(value, str) and _is_date(value) else None


def _is_date(value: object) -> bool:
    # What tailnix writes: "2026-11-28" (a YAML loader may have made it a date already).
    if isinstance(value, date):
        return True
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _fix(path: Path) -> str:
    return (
        "take that setting out of the creation rule in .sops.yaml, then encrypt the file again "
        f"(`sops decrypt -i {path} && sops encrypt -i {path}`), and treat a key that was committed or "
        "copied in clear as exposed"
    )


def sealed_problems(path: Path, metadata: SopsMetadata, secret_name: str) -> list[str]:
    """What in the file would reach a host in clear: one sentence each, naming the value and the cause.

    Never quotes a value: what is in clear may be the key.
    """
    problems = []
    stored = metadata.values.get(secret_name)
    kind = encrypted_type(stored)
    if secret_name in metadata.values and kind is None:
        problems.append(
            f"{path}: the secret {secret_name!r} is in clear, not an ENC[...] value of sops; the file's "
            f"sops block left it so: {metadata.why_clear(secret_name)}; {_fix(path)}"
        )
    elif kind is not None and kind != "str":
        problems.append(
            f"{path}: the secret {secret_name!r} is an encrypted {kind}, and sops-nix takes only strings; "
            f"set it again as a string with `sops set {path} '[\"{secret_name}\"]' '\"...\"'`"
        )
    allowed = date_fields(secret_name, metadata.unencrypted_suffix)
    for key, value in metadata.unencrypted.items():
        if key == secret_name:
            continue
        if key in allowed and (_is_date(value) or (key == allowed[1] and value == NEVER)):
            continue
        problems.append(
            f"{path}: {key!r} is in clear, and the only values kept in clear are the key's dates "
            f"({', '.join(allowed)}); the file's sops block left it so: {metadata.why_clear(key)}; "
            f"{_fix(path)}"
        )
    for comment in metadata.clear_comments:
        problems.append(
            f"{path}: line {comment.line} is a comment in clear (sops encrypts comments unless "
            f"{_comment_declaration(metadata)}); remove it, or {_fix(path)}"
        )
    return problems


def _comment_declaration(metadata: SopsMetadata) -> str:
    for name in ("unencrypted_comment_regex", "encrypted_comment_regex"):
        if name in metadata.declarations:
            return f"told otherwise; here `{name}: {metadata.declarations[name]}`"
    return "told otherwise; here no declaration, so it was added by hand"


def read_sealed(path: Path, secret_name: str) -> SopsMetadata:
    """Read the secrets file's metadata, refusing it if anything but the key's dates is in clear.

    Raises NotEncryptedError for a file that is not a complete sops file, and ClearSecretError (one
    sentence per value) for one that would put something in clear on a host.
    """
    metadata = read_metadata(path)
    problems = sealed_problems(path, metadata, secret_name)
    if problems:
        raise ClearSecretError("\n".join(problems))
    return metadata
