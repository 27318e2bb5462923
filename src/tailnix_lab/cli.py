"""`tailnix lab`: start, inspect, use and stop the lab of emulated NixOS hosts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click

from tailnix_lab.api_service import api_runs, start_api, stop_api
from tailnix_lab.emulator.control import TAG_OWNERS
from tailnix_lab.hosts import SUDO_PASSWORD, Lab, is_alive
from tailnix_lab.layout import LabError
from tailnix_lab.stock import FLAKE_STYLES

DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".lab"),
    show_default=True,
    help="The lab directory.",
)


def _open(directory: Path) -> Lab:
    try:
        return Lab.open(directory)
    except LabError as error:
        raise click.ClickException(str(error)) from error


@click.group()
def lab() -> None:
    """The lab: emulated NixOS hosts on this machine, reachable over SSH.

    Example: tailnix lab up 3 --dir .lab
    """


@lab.command()
@click.argument("count", type=click.IntRange(min=0))
@click.option("--other-os", type=click.IntRange(min=0), default=0, help="Also start this many Debian hosts.")
@click.option(
    "--flake-hosts",
    type=click.IntRange(min=0),
    default=0,
    help="Make the last M of the NixOS hosts flake hosts (/etc/nixos/flake.nix).",
)
@click.option("--flake-git", is_flag=True, help="Make the flake hosts' /etc/nixos a git repository.")
@click.option(
    "--flake-style",
    type=click.Choice(FLAKE_STYLES),
    default="stock",
    show_default=True,
    help="The flake.nix the flake hosts have.",
)
@click.option(
    "--sudo-user",
    metavar="NAME",
    help="Give every host a non-root admin NAME in wheel with sudo; the inventory deploys as NAME with _sudo.",
)
@click.option(
    "--sudo-password",
    is_flag=True,
    help=f"Make that user's sudo ask for a password ({SUDO_PASSWORD!r}) instead of NOPASSWD.",
)
@DIR_OPTION
def up(
    count: int,
    other_os: int,
    flake_hosts: int,
    flake_git: bool,
    flake_style: str,
    sudo_user: str | None,
    sudo_password: bool,
    directory: Path,
) -> None:
    """Start COUNT NixOS hosts, and write the inventory and demo secrets into the lab directory.

    The lab's stand-in Tailscale API starts with them, with one OAuth client; DIR/api.env holds
    TS_API_CLIENT_ID, TS_API_CLIENT_SECRET and TS_BASE_URL for it (`set -a; . DIR/api.env`).

    Example: tailnix lab up 3 --other-os 1 --dir .lab
    """
    try:
        started = Lab.up(
            directory,
            count,
            other_os=other_os,
            flake_hosts=flake_hosts,
            flake_git=flake_git,
            flake_style=flake_style,
            sudo_user=sudo_user,
            sudo_password=sudo_password,
        )
        env_file = start_api(started.layout, tuple(TAG_OWNERS))
    except LabError as error:
        raise click.ClickException(str(error)) from error
    for host in started.hosts:
        kind = f"\tflake ({host.flake}{', git' if host.git else ''})" if host.flake else ""
        if host.sudo_user:
            asks = "asks for a password" if host.sudo_password else "NOPASSWD"
            kind += f"\tdeploys as {host.sudo_user} with sudo ({asks})"
        click.echo(f"{host.name}\t127.0.0.1:{host.port}\t{host.os}{kind}")
    click.echo(f"inventory: {started.layout.inventory}")
    click.echo(
        f"own fleet: {started.layout.own_fleet} (the hosts, for the inventory.py of `tailnix init DIR`)"
    )
    click.echo(f"secrets:   {started.layout.secrets_file} (sops config {started.layout.sops_config})")
    click.echo(
        f"api:       {env_file} (the lab's Tailscale API and an OAuth client for {', '.join(TAG_OWNERS)}; "
        f"for --mint and tailscale_key_expiry: set -a; . {env_file})"
    )


@lab.command()
@DIR_OPTION
def down(directory: Path) -> None:
    """Stop every host of the lab, and its Tailscale API.

    Example: tailnix lab down --dir .lab
    """
    running = _open(directory)
    try:
        stop_api(running.layout)
        running.down()
    except LabError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"stopped {len(running.hosts)} hosts in {running.directory}")


@lab.command()
@DIR_OPTION
@click.option(
    "--tag",
    "tags",
    multiple=True,
    default=("tag:server",),
    show_default=True,
    help="A tag the OAuth client may put on the keys it mints (repeat for more).",
)
def api(directory: Path, tags: tuple[str, ...]) -> None:
    """Serve the lab's stand-in Tailscale API on loopback, with one OAuth client, until Ctrl-C.

    `tailnix lab up` starts it already, with DIR/api.env: this is for a lab whose API is gone.

    The keys it mints are keys of the lab's control plane: try `tailnix rotate-key --mint` with them.

    Example: tailnix lab api --dir .lab --tag tag:server
    """
    from tailnix_lab.emulator.api import TailscaleApi

    running = _open(directory)
    if api_runs(running.layout):
        raise click.ClickException(
            f"the lab's Tailscale API already runs (lab up started it): set -a; . {running.layout.api_env}"
        )
    with TailscaleApi(running.layout.control) as served:
        client_id, secret = served.add_client(tags)
        click.echo("The lab's Tailscale API is serving. In another shell (a lab secret, shown once):\n")
        click.echo(f"export TS_BASE_URL={served.url}")
        click.echo(f"export TS_API_CLIENT_ID={client_id}")
        click.echo(f"export TS_API_CLIENT_SECRET={secret}")
        click.echo(
            f"tailnix rotate-key -i {running.layout.inventory} --mint --tag {tags[0] if tags else 'tag:server'}"
        )
        click.echo("\nCtrl-C stops it.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopped")


@lab.command()
@DIR_OPTION
def status(directory: Path) -> None:
    """List the hosts: name, OS, SSH port, sshd pid, and whether they run.

    Example: tailnix lab status --dir .lab
    """
    running = _open(directory)
    click.echo("NAME\tOS\tPORT\tPID\tSTATE")
    for host in running.hosts:
        state = "running" if is_alive(host) else "stopped"
        click.echo(f"{host.name}\t{host.os}\t{host.port}\t{host.pid}\t{state}")


@lab.command(context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@DIR_OPTION
def ssh(host: str, command: tuple[str, ...], directory: Path) -> None:
    """Run COMMAND on HOST as root.

    Example: tailnix lab ssh nixos-1 --dir .lab -- tailscale status
    """
    running = _open(directory)
    try:
        argv = running.ssh_command(host)
    except LabError as error:
        raise click.ClickException(str(error)) from error
    # ssh joins its arguments with spaces into one remote command line, as it would for a user.
    sys.exit(subprocess.run([*argv, *command], check=False).returncode)
