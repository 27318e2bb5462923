"""Whether the key in the secrets file is due for rotation: `rotate-key --if-expiring-within DAYS`.

Read from the dates recorded in clear beside the key, so a cron job decides without any key, any API
call or any host, and leaves the file byte for byte as it was when there is nothing to do. On a headscale
fleet the server says when the key expires (`headscale preauthkeys list -o json`, read over SSH), since a key
can be expired there by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from tailnix import headscale
from tailnix.authkey import AuthKeyError, read_dates
from tailnix.fleet import SecretsLocation
from tailnix.keyform import bare_key
from tailnix.mint import MintError
from tailnix.secrets_file import never_expires, read_sealed
from tailnix.sops import NotEncryptedError, SopsError, decrypt_value


@dataclass(frozen=True)
class RotationDue:
    """Whether to rotate now, and the one line that says why (or why not)."""

    due: bool
    message: str


def rotation_due(location: SecretsLocation, *, within_days: int, today: date | None = None) -> RotationDue:
    """Is the recorded expiry of the key within `within_days` of today (or passed, or not recorded)."""
    today = today or date.today()
    path = location.secrets_file
    if not path.exists():
        return RotationDue(True, f"{path}: no secrets file yet: creating it")
    try:
        metadata = read_sealed(path, location.secret_name)
    except (NotEncryptedError, OSError) as error:
        raise AuthKeyError(str(error)) from None
    if never_expires(metadata, location.secret_name):
        return RotationDue(
            False, f"{path}: the secret is an OAuth client secret, which does not expire: nothing to do"
        )
    return _due(path, read_dates(location).expires, within_days, today, "")


def _due(path: object, expires: date | None, within_days: int, today: date, said_by: str) -> RotationDue:
    if expires is None:
        return RotationDue(True, f"{path}: the auth key's expiry is not recorded: rotating")
    left = (expires - today).days
    if left < 0:
        return RotationDue(
            True, f"{path}: the auth key expired on {expires}{said_by}, {-left} days ago: rotating"
        )
    if left > within_days:
        return RotationDue(
            False,
            f"{path}: the auth key expires on {expires}{said_by}, in {left} days, more than {within_days}: "
            "nothing to do",
        )
    return RotationDue(
        True,
        f"{path}: the auth key expires on {expires}{said_by}, in {left} days, within {within_days}: rotating",
    )


def headscale_rotation_due(
    location: SecretsLocation,
    server: headscale.HeadscaleServer,
    host: headscale.HeadscaleHost,
    *,
    within_days: int,
    today: date | None = None,
) -> RotationDue:
    """As `rotation_due`, with the expiry the headscale server holds for the key (it may have been expired
    there, `headscale preauthkeys expire`); the key is decrypted with the admin key to find it there."""
    today = today or date.today()
    path = location.secrets_file
    if not path.exists():
        return RotationDue(True, f"{path}: no secrets file yet: creating it")
    try:
        key = bare_key(decrypt_value(path, location.secret_name))
    except SopsError as error:
        raise AuthKeyError(
            f"cannot decrypt {path} to find its key on {server.host} ({error}); set SOPS_AGE_KEY_FILE to the "
            "admin age key"
        ) from None
    try:
        found, expires = headscale.key_expiry(host, key)
    except MintError as error:
        raise AuthKeyError(str(error)) from None
    if not found:
        return RotationDue(
            True,
            f"{path}: the auth key is not one of {server.host}'s (`headscale preauthkeys list`): rotating",
        )
    return _due(path, expires, within_days, today, f" (headscale on {server.host})")
