"""Every command of `tailnix`, the lab's included, shows an example of its use in its --help."""

from __future__ import annotations

import click
from click.testing import CliRunner

from tailnix.cli import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        elif command is not None:
            found.append((*prefix, name))
    return found


def test_every_command_help_has_an_example_line() -> None:
    commands = _commands(main)
    assert {("init",), ("deploy",), ("lab",), ("lab", "up")} <= set(commands), "the walk sees every command"
    missing = []
    for path in commands:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output
        examples = [
            line.strip() for line in result.output.splitlines() if line.strip().startswith("Example:")
        ]
        if not any(line.startswith("Example: tailnix " + " ".join(path)) for line in examples):
            missing.append(" ".join(("tailnix", *path)))
    assert missing == []
