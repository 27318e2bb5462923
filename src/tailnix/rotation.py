"""Whether the key in the secrets file is due for rotation: `rotate-key --if-expiring-within DAYS`.

Read from the dates recorded in clear beside the key, so a cron job decides without any key, any API
call or any host, and leaves the file byte for byte as it was when there is nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from tailnix.authkey import AuthKeyError, read_dates
from tailnix.fleet import SecretsLocation
from tailnix.secrets_file import never_expires, read_sealed
from tailnix.sops import NotEncryptedError


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
    expires = read_dates(location).expires
    if expires is None:
        return RotationDue(True, f"{path}: the auth key's expiry is not recorded: rotating")
    left = (expires - today).days
    if left < 0:
        return RotationDue(True, f"{path}: the auth key expired on {expires}, {-left} days ago: rotating")
    if left > within_days:
        return RotationDue(
            False,
            f"{path}: the auth key expires on {expires}, in {left} days, more than {within_days}: nothing to do",
        )
    return RotationDue(
        True, f"{path}: the auth key expires on {expires}, in {left} days, within {within_days}: rotating"
    )
