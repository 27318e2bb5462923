"""tailnix's shortcuts give what pyinfra's own computations give: the operation order (pyinfra/api/util.py,
`get_operation_order_from_stack`) from a deploy file and from elsewhere, in CLI and API mode, and the global
arguments (pyinfra/api/arguments.py, `all_global_arguments`)."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import pyinfra
import pytest
from pyinfra.api import arguments, facts, util

from tailnix import pyinfra_shortcuts


@dataclass
class _State:
    current_deploy_filename: str | None
    current_op_file_number: int = 7


def _both(state: _State) -> tuple[list[int], list[int]]:
    # Both read the stack from here: pyinfra's from its own frame, tailnix's from its caller's, this one.
    return util.get_operation_order_from_stack(state), pyinfra_shortcuts.operation_order(
        state, sys._getframe()
    )


def _from_deploy_file(tmp_path: Path, deploy_name: str, state: _State) -> tuple[list[int], list[int]]:
    # A deploy file as pyinfra's CLI runs it: compiled under its path and executed, not imported.
    deploy = tmp_path / deploy_name
    deploy.write_text("\n\ndef add():\n    return both(state)\n\n\nresult = add()\n")
    scope = {"both": _both, "state": state}
    exec(compile(deploy.read_text(), str(deploy), "exec"), scope)
    return scope["result"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("is_cli", [True, False])
def test_same_order_as_pyinfra_from_a_deploy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, is_cli: bool
) -> None:
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = _State(current_deploy_filename=str(tmp_path / "tailscale.py"))
    pyinfra_order, ours = _from_deploy_file(tmp_path, "tailscale.py", state)
    assert ours == pyinfra_order
    # The deploy file's two calls, then _both's line; in CLI mode the deploy file's number first.
    assert pyinfra_order[-3:-1] == [7, 4]
    assert len(pyinfra_order) == (4 if is_cli else 3)


@pytest.mark.parametrize("deploy_filename", [None, "elsewhere.py"])
def test_same_order_as_pyinfra_without_the_deploy_file_on_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deploy_filename: str | None
) -> None:
    monkeypatch.setattr(pyinfra, "is_cli", True)
    state = _State(current_deploy_filename=deploy_filename)
    pyinfra_order, ours = _from_deploy_file(tmp_path, "tailscale.py", state)
    assert ours == pyinfra_order


def test_same_global_arguments_as_pyinfra() -> None:
    assert pyinfra_shortcuts.global_arguments() == arguments.all_global_arguments()
    # A list of its own each time, as pyinfra's: a caller may change it.
    assert pyinfra_shortcuts.global_arguments() is not pyinfra_shortcuts.global_arguments()


def test_install_replaces_pyinfra_s_functions_once(monkeypatch: pytest.MonkeyPatch) -> None:
    operation = importlib.import_module("pyinfra.api.operation")
    monkeypatch.setattr(operation, "get_operation_order_from_stack", util.get_operation_order_from_stack)
    monkeypatch.setattr(arguments, "all_global_arguments", arguments.all_global_arguments)
    monkeypatch.setattr(facts, "all_global_arguments", facts.all_global_arguments)
    pyinfra_shortcuts.install()
    pyinfra_shortcuts.install()
    assert operation.get_operation_order_from_stack is pyinfra_shortcuts.operation_order
    assert arguments.all_global_arguments is pyinfra_shortcuts.global_arguments
