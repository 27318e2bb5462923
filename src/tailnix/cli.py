"""The `tailnix` command."""

from __future__ import annotations

import click

from tailnix.lab.cli import lab


@click.group()
def main() -> None:
    """Put a fleet of NixOS machines on a Tailscale network."""


main.add_command(lab)
