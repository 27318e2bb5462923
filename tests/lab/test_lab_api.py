"""`tailnix lab up` serves the stand-in Tailscale API with the lab and writes DIR/api.env for it.

The names are those of Tailscale's own `get-authkey` command and of `tailnix rotate-key --mint`
(`TS_API_CLIENT_ID`, `TS_API_CLIENT_SECRET`, `TS_BASE_URL`), so that `set -a; . DIR/api.env` is all a
user needs before `--mint` or `tailscale_key_expiry = False`.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tailnix import mint

TAILNIX = Path(sys.executable).parent / "tailnix"


def tailnix(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TAILNIX), *arguments], capture_output=True, text=True, check=False, timeout=300
    )


def sourced(env_file: Path) -> dict[str, str]:
    """The variables a shell has after `set -a; . FILE`."""
    shell = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; env -0', "sh", str(env_file)],
        capture_output=True,
        check=True,
        env={},
    )
    pairs = (entry.partition("=") for entry in shell.stdout.decode().split("\0") if entry)
    return {name: value for name, _, value in pairs if name.startswith("TS_")}


def test_lab_up_serves_the_api_and_writes_api_env_that_lab_down_removes(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    started = tailnix("lab", "up", "0", "--dir", str(directory))
    try:
        assert started.returncode == 0, started.stderr
        env_file = directory / "api.env"
        assert f"api:       {env_file}" in started.stdout
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        env = sourced(env_file)
        assert sorted(env) == ["TS_API_CLIENT_ID", "TS_API_CLIENT_SECRET", "TS_BASE_URL"]
        assert env["TS_API_CLIENT_SECRET"].startswith("tskey-client-")
        client = mint.client_from_environment(env)
        assert client is not None
        token = mint.access_token(env["TS_BASE_URL"], client)
        request = urllib.request.Request(
            env["TS_BASE_URL"] + "/api/v2/tailnet/-/devices", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request) as answer:
            assert json.loads(answer.read()) == {"devices": []}
        # A second API by hand would take the hosts' way to api.tailscale.com from the first one.
        second = tailnix("lab", "api", "--dir", str(directory))
        assert second.returncode == 1
        assert (
            f"the lab's Tailscale API already runs (lab up started it): set -a; . {env_file}" in second.stderr
        )
    finally:
        stopped = tailnix("lab", "down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    assert not (directory / "api.env").exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(env["TS_BASE_URL"] + "/api/v2/tailnet/-/devices")
