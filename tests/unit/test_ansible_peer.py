"""The Ansible peer of the bench, without a host: its playbook finds tailnix's files as tailnix writes them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tailnix import paths
from tailnix.nix_imports import add_import
from tailnix_lab import ansible_peer, stock

ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMu4QelyAR4z9ZB3XQpEaZNcjQjHZ6smS+u9H9+mdAKR"


def _task(module: str) -> dict[str, Any]:
    (play,) = ansible_peer.playbook()
    tasks: list[dict[str, Any]] = play["tasks"]
    (task,) = [task for task in tasks if module in task]
    arguments: dict[str, Any] = task[module]
    return arguments


def test_the_import_line_of_the_playbook_is_the_line_tailnix_writes_so_a_converged_host_is_unchanged() -> (
    None
):
    """lineinfile changes nothing when the line its regexp finds is already `line`."""
    lineinfile = _task("ansible.builtin.lineinfile")
    converged = add_import(stock.configuration_nix("nixos-1", ADMIN_KEY), paths.MODULE_IMPORT)
    found = [line for line in converged.splitlines() if re.search(lineinfile["regexp"], line)]
    assert found == [lineinfile["line"]]


def test_on_a_stock_configuration_the_playbook_inserts_the_import_where_tailnix_does() -> None:
    lineinfile = _task("ansible.builtin.lineinfile")
    stock_text = stock.configuration_nix("nixos-1", ADMIN_KEY)
    assert not any(re.search(lineinfile["regexp"], line) for line in stock_text.splitlines())
    lines = stock_text.splitlines()
    anchor = [i for i, line in enumerate(lines) if re.search(lineinfile["insertafter"], line)]
    assert len(anchor) == 1
    as_ansible = [*lines[: anchor[0] + 1], lineinfile["line"], *lines[anchor[0] + 1 :]]
    assert as_ansible == add_import(stock_text, paths.MODULE_IMPORT).splitlines()


def test_the_playbook_places_the_files_where_and_as_tailnix_does() -> None:
    copies = [
        task["ansible.builtin.copy"]
        for task in ansible_peer.playbook()[0]["tasks"]
        if "ansible.builtin.copy" in task
    ]
    assert [(c["dest"], c["mode"]) for c in copies] == [
        (paths.SECRETS_FILE, "0600"),
        (paths.MODULE_FILE, "0644"),
    ]


def test_ansible_runs_every_host_at_once_with_strict_host_key_checking() -> None:
    config = ansible_peer.ansible_config(50, Path("/lab/ssh/known_hosts"), Path("/tmp/cp"))
    assert "forks = 50\n" in config
    assert "pipelining = True\n" in config
    assert "host_key_checking = True\n" in config
    assert "-o StrictHostKeyChecking=yes" in config and "StrictHostKeyChecking=no" not in config
    assert "-o UserKnownHostsFile=/lab/ssh/known_hosts" in config
