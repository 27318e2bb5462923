"""`tailnix retire HOST`: take a host off the tailnet and out of the fleet's secrets, in one command.

The reverse of `bootstrap`. What it finds first (the host's state over SSH, the tailnet's devices through
the API, the recipient in .sops.yaml) is the plan it shows; then, in order: the host's part
(deploys/retire.py: log out, remove tailnix's files, switch with rollback), the device (through the Tailscale
API, or on a headscale fleet with `headscale nodes delete` over SSH on its headscale host), the recipient
(what `forget` does). Each part that cannot be done is said, with what is left and how to finish it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tailnix import headscale, mint, paths
from tailnix.devices import Device, DeviceDirectory, TailnetDevices
from tailnix.facts import HostState
from tailnix.fleet import FleetError, FleetHost, SecretsLocation
from tailnix.headscale import HeadscaleNodes
from tailnix.nix_imports import ImportEditError
from tailnix.node_records import RECORD_FILE, NodeRecord, NodeRecordError, read_records
from tailnix.retirement import LOGGED_IN, Removal, needs_switch, removal
from tailnix.runner import INSTALLED, HostDeployResult, read_fact, run_deploy
from tailnix.settings import SettingsError, parse_settings
from tailnix.sops_config import SopsConfig, SopsConfigError

STATE_FACT = "tailnix.facts.TailnixHostState"
RETIRE_DEPLOY = INSTALLED / "retire.py"


@dataclass
class HostPart:
    """What is to be done on the host itself, or why it cannot be."""

    unreachable: str | None = None
    """Why the host could not be read (no SSH, sudo refused, ...); None when it was."""
    not_in_inventory: bool = False
    """The host is not in the inventory: it is not asked (`forget`'s case, a host already gone)."""
    logged_in: bool = False
    node_id: str | None = None
    """The node's own ID (`Self.ID`) while it is logged in: the one device retire may delete for sure."""
    removal: Removal | None = None
    switch: bool = False
    refused: str | None = None
    """Why the host's files cannot be edited safely, when they cannot."""

    @property
    def work(self) -> bool:
        """Whether anything is to be done on the host."""
        return self.reached and (self.logged_in or self.switch or self.refused is not None)

    @property
    def reached(self) -> bool:
        """Whether the host was asked and answered."""
        return self.unreachable is None and not self.not_in_inventory


@dataclass
class RetirePlan:
    """Everything `retire` found, before it changes anything."""

    host: str
    hostname: str
    on_host: HostPart
    devices: list[Device] = field(default_factory=list)
    device_problem: str | None = None
    """Why the devices were not looked up or cannot be deleted (no client, the API refused)."""
    keep_device: bool = False
    recipient: str | None = None
    recorded: NodeRecord | None = None
    """The node its last good deploy saw (`tailnix-nodes.json`): its device when the host cannot say."""
    others: dict[str, str] = field(default_factory=dict)
    """Node ID -> the other inventory host `tailnix-nodes.json` records it for: never deleted here."""
    spared: list[Device] = field(default_factory=list)
    """Devices of the host's name that are another host's recorded node."""
    via: str = ""
    """How the devices are deleted, as the plan says it after each (empty for the Tailscale API)."""

    @property
    def nothing_to_do(self) -> bool:
        """Whether the host is retired already: nothing on it, no device, no recipient."""
        return (
            self.on_host.unreachable is None
            and not self.on_host.work
            and not self.devices
            and self.device_problem is None
            and self.recipient is None
        )

    def lines(self) -> list[str]:
        """The plan, a line per part, as `--dry` and the confirmation show it."""
        part, host = self.on_host, self.host
        if part.not_in_inventory:
            said = [f"{host}: not in the inventory, so not asked: files on it, if any, stay"]
        elif part.unreachable is not None:
            said = [
                f"{host}: cannot be reached ({part.unreachable}): its files stay and its node is not logged out"
            ]
        else:
            said = [
                f"{host}: log the node out (tailscale logout)" if part.logged_in else f"{host}: not logged in"
            ]
            if part.refused is not None:
                said.append(f"{host}: refused: {part.refused}")
            elif part.removal is not None and part.removal.anything:
                said.append(f"{host}: remove {', '.join(part.removal.describe())}; nixos-rebuild switch")
            elif part.switch:
                said.append(f"{host}: nixos-rebuild switch (the running system still has the module)")
            else:
                said.append(f"{host}: nothing of tailnix in {paths.NIXOS_DIR}")
        if self.keep_device:
            said.append("tailnet: the device is kept (--keep-device)")
        elif self.device_problem is not None:
            said.append(f"tailnet: {self.device_problem}")
        elif self.devices:
            said += [
                f"tailnet: delete the device {d.name or d.hostname} ({d.device_id}){self._found_by(d)}{self.via}"
                for d in self.devices
            ]
        elif self.recorded is not None and self.on_host.node_id is None:
            said.append(
                f"tailnet: the device of its last deploy, {self.recorded.name} ({self.recorded.node_id}), "
                "is gone already"
            )
        else:
            said.append(f"tailnet: no device named {self.hostname}")
        said += [
            f"tailnet: {d.name or d.hostname} ({d.device_id}) is {self.others[d.device_id]}'s node "
            f"({RECORD_FILE}): left alone"
            for d in self.spared
        ]
        if self.recipient is not None:
            said.append(f".sops.yaml: remove the recipient &{host} ({self.recipient}) and re-encrypt")
        else:
            said.append(f".sops.yaml: no recipient &{host}")
        return said

    def _found_by(self, device: Device) -> str:
        if (
            self.on_host.node_id is None
            and self.recorded is not None
            and device.device_id == self.recorded.node_id
        ):
            return f", the node its last deploy saw ({RECORD_FILE})"
        return ""


def recorded_nodes(base_dir: Path, host: str) -> tuple[NodeRecord | None, dict[str, str]]:
    """The node the host's last good deploy saw (None when none was recorded), and the other hosts' nodes
    (node ID -> host).

    A node recorded for two inventory hosts (the file edited by hand, or a host renamed in the inventory)
    belongs to neither for sure: that is an error, and no device is deleted.
    """
    try:
        records = read_records(base_dir)
    except NodeRecordError as error:
        raise FleetError(str(error)) from None
    others = {other.node_id: name for name, other in records.items() if name != host}
    record = records.get(host)
    if record is not None and record.node_id in others:
        raise FleetError(
            f"{base_dir / RECORD_FILE}: the node {record.node_id} is recorded for {host} and for "
            f"{others[record.node_id]}: it cannot be told whose it is; remove the wrong entry"
        )
    return record, others


def read_host(inventory_file: Path, member: FleetHost | None) -> HostPart:
    """The host's part of the plan, read over SSH as the deploy reads it."""
    if member is None:
        return HostPart(not_in_inventory=True)
    reading = read_fact(inventory_file, STATE_FACT, [member])
    problem = reading.errors.get(member.name) or reading.refused.get(member.name)
    if problem is not None:
        return HostPart(unreachable=problem)
    value = reading.values[member.name]
    state = HostState(**{**value, "git_tracked": tuple(value.get("git_tracked") or ())})
    status = state.tailscale_status or {}
    part = HostPart(logged_in=status.get("BackendState") in LOGGED_IN)
    own_id = (status.get("Self") or {}).get("ID")
    if part.logged_in and isinstance(own_id, str) and own_id:
        part.node_id = own_id
    try:
        part.removal = removal(state, None)
    except ImportEditError as error:
        part.refused = f"{paths.CONFIGURATION_FILE} cannot be edited safely ({error})"
        return part
    part.switch = needs_switch(state, part.removal)
    return part


def oauth_client(oauth_file: Path | None) -> mint.OAuthClient | None:
    """The OAuth client as `rotate-key --mint` finds it: the environment, then --oauth-file."""
    client = mint.client_from_environment()
    if client is None and oauth_file is not None:
        client = mint.client_from_sops_file(oauth_file)
    return client


def headscale_nodes(
    plan: RetirePlan, inventory_file: Path, member: FleetHost | None, fleet: list[FleetHost]
) -> HeadscaleNodes | None:
    """The headscale server's nodes when the host logs in to one (its `tailscale_login_server`); else None.

    When the inventory does not say where headscale runs, the plan says so (nothing is deleted).
    """
    if member is None:
        return None
    try:
        return headscale.headscale_nodes(inventory_file, member, fleet)
    except mint.MintError as error:
        plan.device_problem = f"the node {plan.hostname} is not deleted: {error}"
        return None


def find_devices(
    plan: RetirePlan,
    api_url: str,
    client: mint.OAuthClient | None,
    *,
    on_headscale: HeadscaleNodes | None = None,
) -> DeviceDirectory | None:
    """Look the host's devices up in the plan; where to delete them, None when nowhere.

    + on_headscale: the headscale server's nodes, for a host that logs in there (then `client` is not used)
    """
    if plan.device_problem is not None:
        return None
    directory: DeviceDirectory
    if on_headscale is not None:
        directory = on_headscale
    elif client is None:
        plan.device_problem = (
            f"no OAuth client (${mint.CLIENT_ID_ENV} and ${mint.CLIENT_SECRET_ENV}, or --oauth-file): the "
            f"device {plan.hostname} is not deleted; remove it in the admin console (Machines, Remove) or "
            f"with DELETE /api/v2/device/ID"
        )
        return None
    else:
        directory = TailnetDevices(api_url, client)
    plan.via = directory.via
    # Another machine may have the same host name, and the host's own hostname need not be its inventory
    # name: the node ID decides when it is known (the host's own while it answers and is logged in, else
    # the one its last good deploy recorded), and without it only a single device of that name is taken
    # for the host's.
    node_id = plan.on_host.node_id or (plan.recorded.node_id if plan.recorded is not None else None)
    try:
        if node_id is not None:
            device = directory.by_id(node_id)
            plan.devices = [device] if device is not None else []
            return directory
        named = directory.named(plan.hostname)
    except mint.MintError as error:
        plan.device_problem = f"the devices could not be read: {error}"
        return None
    # A device of that name that another host's last deploy recorded as its node is that host's.
    plan.spared = [device for device in named if device.device_id in plan.others]
    named = [device for device in named if device.device_id not in plan.others]
    if len(named) > 1:
        listed = ", ".join(f"{d.name or d.hostname} ({d.device_id})" for d in named)
        plan.device_problem = (
            f"{len(named)} devices are named {plan.hostname} ({listed}) and the host did not say which is "
            f"its own: none is deleted; remove the right one {directory.how_to_remove}"
        )
    else:
        plan.devices = named
    return directory


def recipient_of(location: SecretsLocation, host: str) -> str | None:
    """The host's recipient in .sops.yaml (the anchor named after it), None when there is none."""
    if not location.secrets_file.is_file() or not location.sops_config.is_file():
        return None
    try:
        return SopsConfig.read(location.sops_config, location.secrets_file).named(host)
    except SopsConfigError as error:
        raise FleetError(str(error)) from None


def device_hostname(member: FleetHost | None, host: str, base_dir: Path) -> str:
    """The host name the host's node has on the tailnet: `tailscale_hostname`, or the inventory name."""
    if member is None:
        return host
    try:
        return parse_settings(host, member.data, base_dir=base_dir).hostname or host
    except SettingsError as error:
        raise FleetError(str(error)) from None


def retire_on_host(inventory_file: Path, host: str) -> HostDeployResult:
    """Run deploys/retire.py on the host."""
    outcome = run_deploy(inventory_file, [host], deploy_file=RETIRE_DEPLOY)
    return outcome.hosts[0]


def delete_devices(api: DeviceDirectory, devices: list[Device]) -> tuple[list[str], bool]:
    """Delete the devices: a line for each, and whether all went."""
    said, ok = [], True
    for device in devices:
        try:
            gone = api.delete(device)
        except mint.MintError as error:
            said.append(f"tailnet: error: {error}")
            ok = False
            continue
        verb = "deleted the device" if gone else "the device was gone already:"
        said.append(f"tailnet: {verb} {device.name or device.hostname} ({device.device_id}){api.via}")
    return said, ok
