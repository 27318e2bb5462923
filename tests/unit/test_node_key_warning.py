"""When `tailnix status` warns about a node key (`Self.KeyExpiry` of `tailscale status --json`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tailnix.status import node_key_warning

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key_expiry", "warned"),
    [
        ("2026-12-12T12:00:00Z", True),  # 10 days
        ("2026-12-16T12:00:00Z", True),  # 14 days exactly: within the window
        ("2026-12-16T12:00:01Z", False),
        ("2026-12-01T12:00:00Z", False),  # passed: the node is NeedsLogin, a problem, not a warning
        (None, False),  # not logged in, or key expiry disabled for the device
        ("soon", False),
    ],
)
def test_a_warning_within_the_window_only(key_expiry: str | None, warned: bool) -> None:
    warning = node_key_warning(key_expiry, warn_days=14, now=NOW)
    assert (warning is not None) == warned
    if warning is not None:
        assert warning.startswith(f"its node key expires on {key_expiry[:10]}, in ")  # type: ignore[index]
