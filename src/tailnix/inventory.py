"""Reading a pyinfra inventory outside a pyinfra run, for the `tailnix` commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyinfra.api.state import State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory


class InventoryError(ValueError):
    """An inventory that cannot be loaded, or a host it does not have."""


def host_data(inventory_file: Path, host_name: str) -> dict[str, Any]:
    """The merged data of one host, as a deploy would see it (group_data beside the inventory and here)."""
    if not inventory_file.is_file():
        raise InventoryError(f"inventory {inventory_file} does not exist")
    # pyinfra executes inventory and group_data files inside a State context, as its CLI does.
    with ctx_state.use(State()):
        inventory = make_inventory(str(inventory_file), cwd=os.getcwd())
    host = inventory.get_host(host_name, None)
    if host is None:
        names = ", ".join(h.name for h in inventory) or "none"
        raise InventoryError(f"host {host_name!r} is not in {inventory_file} (hosts: {names})")
    return dict(host.data.dict())
