"""Reading a pyinfra inventory outside a pyinfra run, for the `tailnix` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyinfra.api.state import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from tailnix.fleet import inventory_directory


class InventoryError(ValueError):
    """An inventory that cannot be loaded, or a host it does not have."""


def host_data(inventory_file: Path, host_name: str) -> dict[str, Any]:
    """The merged data of one host, as a deploy would see it (with the group_data beside the inventory)."""
    if not inventory_file.is_file():
        raise InventoryError(f"inventory {inventory_file} does not exist")
    # pyinfra executes inventory and group_data files inside a State context, as its CLI does.
    with ctx_state.use(State()):
        inventory = make_inventory(
            str(inventory_file.absolute()), cwd=str(inventory_directory(inventory_file))
        )
    host = inventory.get_host(host_name, None)
    if host is None:
        names = ", ".join(h.name for h in inventory) or "none"
        raise InventoryError(f"host {host_name!r} is not in {inventory_file} (hosts: {names})")
    return dict(host.data.dict())
