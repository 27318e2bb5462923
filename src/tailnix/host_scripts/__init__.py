"""The shell tailnix runs on hosts, kept as files beside this one so that it is read and linted as shell.

Each script names its arguments in its header and reads them as `$1`, `$2`, ...: `command` turns one
into a shell command whose arguments are set first (`set -- ...`, each quoted with `shlex.quote`), so no
value is ever pasted into a script's text. `make check` runs `shellcheck` over them.
"""

from __future__ import annotations

import functools
import shlex
from importlib.resources import files


@functools.cache
def text(name: str) -> str:
    """The script `name` (`lock.sh`, ...) as it is in the package."""
    return (files(__name__) / name).read_text(encoding="utf-8")


def arguments(*values: str | int) -> str:
    """`values` as shell words, each quoted."""
    return " ".join(shlex.quote(str(value)) for value in values)


def command(name: str, *values: str | int) -> str:
    """The script `name` as one shell command, with `values` as its positional arguments."""
    return f"set -- {arguments(*values)}\n{text(name)}"
