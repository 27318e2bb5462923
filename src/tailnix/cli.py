"""The `tailnix` command: what pyinfra alone does not do.

Commands of other installed packages join it through the `tailnix.commands` entry point group (the
lab's `lab` and `bench` do, when the lab is installed); `tailnix --help` lists them apart.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import click

from tailnix import commands
from tailnix.inventory import InventoryError, host_data
from tailnix.nixmodule import render_module
from tailnix.settings import SettingsError, parse_settings

PLUGIN_GROUP = "tailnix.commands"

# What a user does -> the commands for it, in the order `tailnix --help` lists them.
SECTIONS = {
    "Start": ("init",),
    "Daily": ("deploy", "status", "check"),
    "Keys": ("rotate-key",),
    "Hosts": ("bootstrap", "forget"),
    "Inspect": ("module",),
}


class SectionedGroup(click.Group):
    """A group whose help lists its commands by what a user does with them; plugins come last."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed: set[str] = set()
        sections = [*SECTIONS.items(), ("Plugins (the lab, when installed)", tuple(self.list_commands(ctx)))]
        for title, names in sections:
            rows = []
            for name in names:
                command = self.get_command(ctx, name)
                if command is None or command.hidden or name in listed:
                    continue
                listed.add(name)
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


@click.group(cls=SectionedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tailnix", message="%(prog)s %(version)s")
def main() -> None:
    """Put a fleet of NixOS machines on a Tailscale network, and keep them there.

    The deploy itself is a pyinfra run: pyinfra inventory.py deploys/tailscale.py

    Example: tailnix init my-fleet
    """


@main.command("module")
@click.argument("host")
@commands.inventory_option
def module_command(host: str, inventory_file: Path) -> None:
    """Print the NixOS module HOST would receive, without touching it.

    Example: tailnix module desk -i inventory.py
    """
    try:
        settings = parse_settings(host, host_data(inventory_file, host))
    except (InventoryError, SettingsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(render_module(settings), nl=False)


main.add_command(commands.init_command)
main.add_command(commands.bootstrap_command)
main.add_command(commands.forget_command)
main.add_command(commands.rotate_key_command)
main.add_command(commands.check_command)
main.add_command(commands.deploy_command)
main.add_command(commands.status_command)

for plugin in entry_points(group=PLUGIN_GROUP):
    main.add_command(plugin.load(), plugin.name)
