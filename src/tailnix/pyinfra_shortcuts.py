"""Two of pyinfra's computations, repeated for every operation and fact on every host, done more cheaply.

pyinfra 3.10 does, for each operation and each fact of each host:

- `get_operation_order_from_stack` (`pyinfra/api/util.py`): the line numbers its CLI orders operations
  by, from `inspect.stack()`, which also reads a line of source for each frame and, for a frame of the
  deploy file (executed, not imported), searches every loaded module for it, twice. 2.4 ms per operation
  and host on the deployer; `operation_order` reads the same file names and line numbers from the frames.
- `all_global_arguments` (`pyinfra/api/arguments.py`): the global arguments (`_sudo`, ...) and their
  types, from `typing.get_type_hints` over the same TypedDicts every time (0.2 to 0.4 ms a call, three
  calls per converged host); `global_arguments` computes them once.

Both give what pyinfra's own give (tests/unit/test_pyinfra_shortcuts.py compares them). `install` puts
them in pyinfra's place for the run whose deploy file calls it (tailnix.operations.begin_host); with a
pyinfra release whose functions are no longer these, it leaves pyinfra alone.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from types import FrameType
from typing import Any

import pyinfra
from pyinfra.api import arguments, facts, util

_operation_module = importlib.import_module(
    "pyinfra.api.operation"
)  # `pyinfra.api.operation` is also a function
_PYINFRA_ORDER = util.get_operation_order_from_stack
_PYINFRA_GLOBAL_ARGUMENTS = arguments.all_global_arguments

_FILENAMES: dict[str, str] = {}


def _filename(frame: FrameType) -> str:
    # inspect.getframeinfo's file name: the source file of the code (a `.py` for a `.pyc`) when there is
    # one, else the code's own. A fleet's frames come from a few dozen files: each is looked up once.
    code_filename = frame.f_code.co_filename
    known = _FILENAMES.get(code_filename)
    if known is None:
        known = _FILENAMES[code_filename] = inspect.getsourcefile(frame) or inspect.getfile(frame)
    return known


def operation_order(state: Any, frame: FrameType | None = None) -> list[int]:
    """The line numbers pyinfra orders the operation being added by, as `get_operation_order_from_stack`.

    + state: pyinfra's State (its `current_deploy_filename` and `current_op_file_number`)
    + frame: the innermost frame to read from (default: the caller's, pyinfra's operation wrapper)
    """
    frames: list[FrameType] = []
    current: FrameType | None = frame if frame is not None else sys._getframe(1)
    while current is not None:
        frames.append(current)
        current = current.f_back
    frames.reverse()
    start = 0
    deploy_file = state.current_deploy_filename
    if deploy_file:
        found = [i for i, item in enumerate(frames) if _filename(item) == deploy_file]
        # pyinfra's loop leaves its index on the innermost frame (its own, skipped below) when the deploy
        # file is not on the stack.
        start = found[0] if found else len(frames)
    line_numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    line_numbers += [
        item.f_lineno for item in frames[start:] if not _filename(item).startswith(util.PYINFRA_INSTALL_DIR)
    ]
    return line_numbers


@functools.cache
def _global_arguments() -> tuple[tuple[str, type], ...]:
    return tuple(_PYINFRA_GLOBAL_ARGUMENTS())


def global_arguments() -> list[tuple[str, type]]:
    """pyinfra's global arguments and their types, as `all_global_arguments` (a new list each call)."""
    return list(_global_arguments())


def install() -> None:
    """Use `operation_order` and `global_arguments` in pyinfra from now on in this process (idempotent)."""
    if getattr(_operation_module, "get_operation_order_from_stack", None) is _PYINFRA_ORDER:
        _operation_module.get_operation_order_from_stack = operation_order  # type: ignore[attr-defined]
    for module in (arguments, facts):
        if getattr(module, "all_global_arguments", None) is _PYINFRA_GLOBAL_ARGUMENTS:
            module.all_global_arguments = global_arguments  # type: ignore[attr-defined]
