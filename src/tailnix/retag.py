"""On a headscale fleet, `tailscale_advertise_tags` are set on the server: `tailnix deploy` runs `headscale nodes tag`.

headscale v0.29.2 gives a node the tags of its pre-auth key at its first login, refuses the tags a new node
asks for with one, and keeps a node's tags whenever it logs in again (`hscontrol/state/state.go`,
`createAndSaveNewNode`, `HandleNodeFromPreAuthKey`): logging in again never changes them, as it does on
Tailscale. Only its admin command does (`cmd/headscale/cli/nodes.go`, `headscale nodes tag -i ID -t TAGS`,
which replaces them, for tags the policy defines).

So, before the deploy, for each Running node on headscale whose granted tags (`Self.Tags`) differ from the
settings, and whose fleet names the headscale host (`tailnix_headscale_host`), tailnix runs that command over
SSH on the headscale host (from this process: no host runs it), then reads the node again until it carries
the new tags (bounded). The deploy's own check then finds nothing to change; verify checks the tags. Without
a headscale host, or under a plain `pyinfra` run, the deploy refuses such a host with the command to run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tailnix import headscale
from tailnix.fleet import FleetHost, load_fleet
from tailnix.mint import MintError
from tailnix.reauth import HeadscaleRetag, granted_tags, headscale_retag
from tailnix.runner import read_fact
from tailnix.settings import SettingsError, TailscaleSettings, parse_settings
from tailnix.status import FLEET_STATUS_FACT

# How long a node may take to see its new tags (headscale sends the node a map update at once).
TAGS_WAIT_SECONDS = 30
_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Retagged:
    """What became of one host's tags."""

    host: str
    ok: bool
    message: str


def _settings(host: FleetHost) -> TailscaleSettings | None:
    try:
        settings = parse_settings(host.name, host.data)
    except SettingsError:
        return None  # the deploy refuses the host
    return settings if settings.on_headscale and settings.advertise_tags else None


def retag_on_headscale(inventory_file: Path, hosts: list[FleetHost], *, dry: bool = False) -> list[Retagged]:
    """Set the wanted tags of the Running nodes on headscale that lack them; one result per node changed.

    + dry: only say what would be run (the hosts are read, nothing is changed)

    Hosts without tags in their settings, not on headscale, or whose fleet does not name the headscale host
    are not read. A node that is not Running is left to its login (it gets its key's tags; verify says so).
    """
    wanted = {host.name: settings for host in hosts if (settings := _settings(host)) is not None}
    if not wanted:
        return []
    fleet = load_fleet(inventory_file)
    servers: dict[str, headscale.HeadscaleNodes] = {}
    for host in hosts:
        if host.name in wanted:
            try:
                nodes = headscale.headscale_nodes(inventory_file, host, fleet)
            except MintError:
                nodes = None  # the deploy refuses the host, with the command to run
            if nodes is not None:
                servers[host.name] = nodes
    if not servers:
        return []
    chosen = [host for host in hosts if host.name in servers]
    reading = read_fact(inventory_file, FLEET_STATUS_FACT, chosen)
    results = []
    for host in chosen:
        value = reading.values.get(host.name) or {}
        retag = headscale_retag(wanted[host.name], value.get("tailscale"), value.get("prefs"))
        if retag is None:
            continue
        nodes = servers[host.name]
        command = " ".join(retag.argv)
        if dry:
            results.append(Retagged(host.name, True, f"{retag.change} (`{command}` on {nodes.server.host})"))
            continue
        if not retag.node_id:
            results.append(Retagged(host.name, False, retag.refusal()))
            continue
        try:
            nodes.host.run(retag.argv)
        except MintError as error:
            results.append(Retagged(host.name, False, f"its tags could not be set on headscale: {error}"))
            continue
        results.append(_seen(inventory_file, host, retag, f"`{command}` on {nodes.server.host}"))
    return results


def _seen(inventory_file: Path, host: FleetHost, retag: HeadscaleRetag, ran: str) -> Retagged:
    """Read the node until it carries the new tags, for at most TAGS_WAIT_SECONDS."""
    deadline = time.monotonic() + TAGS_WAIT_SECONDS
    granted: tuple[str, ...] = retag.granted
    while True:
        reading = read_fact(inventory_file, FLEET_STATUS_FACT, [host])
        status = (reading.values.get(host.name) or {}).get("tailscale") or {}
        granted = granted_tags(status)
        if granted == retag.wanted:
            return Retagged(host.name, True, f"{retag.change} on headscale ({ran})")
        if time.monotonic() >= deadline:
            return Retagged(
                host.name,
                False,
                f"ran {ran}, but after {TAGS_WAIT_SECONDS}s the node carries {', '.join(granted) or 'no tags'}, "
                f"not {', '.join(retag.wanted)}",
            )
        time.sleep(_POLL_SECONDS)
