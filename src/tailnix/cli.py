"""The `tailnix` command: what pyinfra alone does not do.

Commands of other installed packages join it through the `tailnix.commands` entry point group (the
lab's `lab` and `bench` do, when the lab is installed); `tailnix --help` lists them apart.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import click

from tailnix import commands
from tailnix.flake import read_flake
from tailnix.fleet import FleetError, inventory_directory, load_fleet, select_hosts
from tailnix.nix_imports import ImportEditError
from tailnix.nixmodule import render_module
from tailnix.runner import read_fact
from tailnix.settings import SettingsError, parse_settings

PLUGIN_GROUP = "tailnix.commands"
STATE_FACT = "tailnix.facts.TailnixHostState"

# What a user does -> the commands for it, in the order `tailnix --help` lists them.
SECTIONS = {
    "Start": ("init",),
    "Daily": ("deploy", "status", "check"),
    "Keys": ("rotate-key", "secrets"),
    "Hosts": ("bootstrap", "retire", "forget"),
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
@click.option(
    "--offline",
    is_flag=True,
    help="Do not ask the host; print the module for a host whose flake (if any) brings no sops-nix.",
)
def module_command(host: str, inventory_file: Path, offline: bool) -> None:
    """Print the NixOS module HOST would receive, without changing anything.

    The variant depends on the host: a flake that brings its own sops-nix gets a module without a second
    copy. So the host's state is read over SSH first (as the deploy reads it), unless --offline.

    Example: tailnix module desk -i inventory.py
    """
    try:
        fleet = select_hosts(load_fleet(inventory_file), [host], [])
        settings = parse_settings(host, fleet[0].data, base_dir=inventory_directory(inventory_file))
    except (SettingsError, FleetError) as error:
        raise click.ClickException(str(error)) from None
    sops_nix_from_flake = False
    if not offline:
        reading = read_fact(inventory_file, STATE_FACT, fleet)
        problem = reading.errors.get(host) or reading.refused.get(host)
        if problem is not None:
            raise click.ClickException(
                f"{host}: cannot read its state ({problem}); --offline prints the module without asking it"
            )
        flake_nix = reading.values[host].get("flake_nix")
        try:
            flake = read_flake(flake_nix) if isinstance(flake_nix, str) else None
        except ImportEditError as error:
            raise click.ClickException(f"{host}: /etc/nixos/flake.nix cannot be read ({error})") from None
        sops_nix_from_flake = flake is not None and flake.uses_sops_nix_module
    click.echo(render_module(settings, sops_nix_from_flake=sops_nix_from_flake), nl=False)


main.add_command(commands.init_command)
main.add_command(commands.bootstrap_command)
main.add_command(commands.retire_command)
main.add_command(commands.forget_command)
main.add_command(commands.rotate_key_command)
main.add_command(commands.secrets_group)
main.add_command(commands.check_command)
main.add_command(commands.deploy_command)
main.add_command(commands.status_command)

for plugin in entry_points(group=PLUGIN_GROUP):
    main.add_command(plugin.load(), plugin.name)
