"""pyinfra's operation order, read from the call stack without reading source files.

pyinfra's CLI orders the operations of a deploy file by the line numbers of the calls that added them
(`pyinfra/api/util.py`, `get_operation_order_from_stack`, called for every operation on every host). It
builds them with `inspect.stack()`, which also reads a line of source for each frame, and for a frame of
the deploy file (executed, not imported) looks for its module through every loaded module, twice: 2.4 ms
per operation and host on the deployer, most of what a converged host cost it while the deploy is
prepared. The frames themselves carry the same file names and line numbers, so `install` replaces it with
`operation_order`, which gives the same list (tests/unit/test_operation_order.py compares the two), for
the run whose deploy file calls it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from types import FrameType
from typing import Any

import pyinfra
from pyinfra.api import util

_operation_module = importlib.import_module(
    "pyinfra.api.operation"
)  # `pyinfra.api.operation` is also a function
_PYINFRA_ORDER = util.get_operation_order_from_stack

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


def install() -> None:
    """Use `operation_order` for the operations pyinfra adds from now on in this process (idempotent).

    Left alone when pyinfra no longer orders operations with that function (a newer release).
    """
    if getattr(_operation_module, "get_operation_order_from_stack", None) is _PYINFRA_ORDER:
        _operation_module.get_operation_order_from_stack = operation_order  # type: ignore[attr-defined]
