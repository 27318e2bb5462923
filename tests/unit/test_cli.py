"""The `tailnix` command's usage errors: exit 2 with the reason, before any host or file is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tailnix.cli import main


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.py"
    path.write_text("web = [('web1', {'ssh_port': 1}), ('web2', {'ssh_port': 2})]\n")
    return path


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["deploy", "--limit", "nosuch"], "not in the inventory: nosuch (hosts: web1, web2)"),
        (["status", "--limit", "nosuch"], "not in the inventory: nosuch"),
        (["bootstrap", "nosuch"], "not in the inventory: nosuch"),
        (["bootstrap"], "name the hosts to bootstrap, or a group with --limit"),
        (
            ["rotate-key", "--tag", "tag:server"],
            "--tag, --single-use, --ephemeral and --oauth-file go with --mint",
        ),
        (
            ["rotate-key", "--mint", "--tag", "tag:server", "--expires", "2027-01-01"],
            "--expires is for a key",
        ),
        (["deploy", "--batch", "0"], "Invalid value for '--batch'"),
    ],
)
def test_usage_errors_exit_2_and_say_why(inventory: Path, arguments: list[str], words: str) -> None:
    result = CliRunner().invoke(main, [*arguments, "-i", str(inventory)])
    assert result.exit_code == 2, result.output
    assert words in result.output
