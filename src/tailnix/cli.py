"""The `tailnix` command: what pyinfra alone does not do."""

from __future__ import annotations

from pathlib import Path

import click

from tailnix import commands
from tailnix.bench import bench
from tailnix.inventory import InventoryError, host_data
from tailnix.lab.cli import lab
from tailnix.nixmodule import render_module
from tailnix.settings import SettingsError, parse_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Put a fleet of NixOS machines on a Tailscale network, and keep them there.

    The deploy itself is a pyinfra run: pyinfra inventory.py deploys/tailscale.py
    """


@main.command("module")
@click.argument("host")
@commands.inventory_option
def module_command(host: str, inventory_file: Path) -> None:
    """Print the NixOS module HOST would receive, without touching it."""
    try:
        settings = parse_settings(host, host_data(inventory_file, host))
    except (InventoryError, SettingsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(render_module(settings), nl=False)


main.add_command(lab)
main.add_command(bench)
main.add_command(commands.bootstrap_command)
main.add_command(commands.forget_command)
main.add_command(commands.rotate_key_command)
main.add_command(commands.check_command)
main.add_command(commands.deploy_command)
main.add_command(commands.status_command)
