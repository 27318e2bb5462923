"""What a deploy does, host by host, as data: one JSON object per line in the file $TAILNIX_EVENTS names.

pyinfra's human-readable output changes wording between releases, and says why a host failed only in
log lines. So the playbook registers `EventFile`, a pyinfra state callback, when the variable is set, and
`tailnix deploy` follows the file for its progress and its summary. Without the variable nothing is
written and the deploy runs as it always did.

A line, one per event:

    {"host": "desk", "step": "nixos-rebuild switch", "outcome": "success", "sentence": "switched, ...",
     "lines": [], "switched": true}

`step` is a name from tailnix.steps ("" outside an operation); `outcome` is one of the constants below;
`sentence` is what tailnix said about the host during that step (for an error, why it failed), and
`lines` the first lines of the evidence (nixos-rebuild's error, the join unit's journal). Every text
goes through `redact_secrets` first: no key-looking value is ever written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import IO, Any

from pyinfra.api.host import Host
from pyinfra.api.state import BaseStateCallback, State

from tailnix.settings import redact_secrets

EVENTS_ENV = "TAILNIX_EVENTS"

START = "start"
"""The host began a step."""
SUCCESS = "success"
"""The step ended well on the host (whether or not it changed anything)."""
ERROR = "error"
"""The step failed on the host; the host goes no further."""
REFUSED = "refused"
"""The host was refused before any step (not NixOS, cannot decrypt, ...); nothing was changed on it."""
UNREACHABLE = "unreachable"
"""pyinfra could not connect to the host; nothing was done on it."""
PLANNED = "planned"
"""While the deploy is prepared: a change the host will see that its step's name alone does not say."""
INVALID = "invalid"
"""The host's settings or secrets file are wrong: the whole run stops before any host is changed."""

MAX_LINES = 8
"""At most this many lines of evidence per event: enough to act on, short enough for a summary."""


@dataclass(frozen=True)
class Event:
    """One thing that happened to one host."""

    host: str
    step: str
    outcome: str
    sentence: str = ""
    lines: tuple[str, ...] = ()
    switched: bool = False

    def to_line(self) -> str:
        """The event as one line of JSON, every text redacted."""
        fields: dict[str, Any] = asdict(self)
        fields["sentence"] = redact_secrets(self.sentence)
        fields["lines"] = [redact_secrets(line) for line in self.lines[:MAX_LINES]]
        return json.dumps(fields) + "\n"

    @classmethod
    def from_line(cls, line: str) -> Event | None:
        """The event a line holds; None for a line that is not one (a writer killed mid-line)."""
        try:
            fields = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(fields, dict) or not {"host", "step", "outcome"} <= fields.keys():
            return None
        return cls(
            host=str(fields["host"]),
            step=str(fields["step"]),
            outcome=str(fields["outcome"]),
            sentence=str(fields.get("sentence") or ""),
            lines=tuple(str(line) for line in fields.get("lines") or ()),
            switched=bool(fields.get("switched")),
        )


@dataclass(frozen=True)
class _Said:
    sentence: str
    lines: tuple[str, ...]
    switched: bool


class EventFile(BaseStateCallback):
    """pyinfra callbacks that append the run's events to a file (created 0600 if it does not exist)."""

    def __init__(self, path: str) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: IO[str] = os.fdopen(descriptor, "w", encoding="utf-8")
        self._said: dict[str, _Said] = {}
        # Errors of commands that printed their reason themselves: told once the output is complete.
        self._untold: dict[str, str] = {}

    def write(self, event: Event) -> None:
        """Append one event, at once (the reader follows the file while the run goes on)."""
        self._file.write(event.to_line())
        self._file.flush()

    def said(self, host: str, sentence: str, lines: tuple[str, ...], switched: bool) -> None:
        """What tailnix said about `host` in its current step; the step's end event carries it."""
        self._said[host] = _Said(sentence, lines, switched)

    @staticmethod
    def _step(state: State, op_hash: str) -> str:
        return ", ".join(sorted(state.get_op_meta(op_hash).names))

    def operation_host_start(self, state: State, host: Host, op_hash: str) -> None:  # type: ignore[override]
        self._said.pop(host.name, None)
        self.write(Event(host.name, self._step(state, op_hash), START))

    def operation_host_success(  # type: ignore[override]
        self, state: State, host: Host, op_hash: str, retry_count: int = 0
    ) -> None:
        said = self._said.pop(host.name, _Said("", (), False))
        self.write(
            Event(host.name, self._step(state, op_hash), SUCCESS, said.sentence, said.lines, said.switched)
        )

    def operation_host_error(  # type: ignore[override]
        self, state: State, host: Host, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        said = self._said.pop(host.name, None)
        if said is None:
            # A shell command failed and printed why; its output is complete when the host disconnects.
            self._untold[host.name] = op_hash
            return
        self.write(Event(host.name, self._step(state, op_hash), ERROR, said.sentence, said.lines))

    def host_disconnect(self, state: State, host: Host) -> None:  # type: ignore[override]
        op_hash = self._untold.pop(host.name, None)
        if op_hash is None:
            return
        meta = state.get_op_data_for_host(host, op_hash).operation_meta
        output = [line for line in meta.stderr_lines + meta.stdout_lines if line.strip()]
        step = self._step(state, op_hash)
        sentence = output[0] if output else f"{step} failed"
        self.write(Event(host.name, step, ERROR, sentence, tuple(output[1:])))


_FILES: dict[int, EventFile] = {}


def record_events(state: State) -> EventFile | None:
    """Register an EventFile on this run when $TAILNIX_EVENTS names a file (once per run); None otherwise."""
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return None
    if id(state) not in _FILES:
        _FILES[id(state)] = EventFile(path)
        state.add_callback_handler(_FILES[id(state)])  # type: ignore[no-untyped-call]  # pyinfra does not type it
    return _FILES[id(state)]


def host_said(
    state: State, host: str, message: str, *, lines: tuple[str, ...] | None = None, switched: bool = False
) -> None:
    """Record what tailnix told the user about `host` (its first line is the sentence; `lines` the evidence).

    Nothing happens when the run records no events.
    """
    events = _FILES.get(id(state))
    if events is None:
        return
    first, _, rest = message.strip().partition("\n")
    events.said(host, first, lines if lines is not None else tuple(rest.splitlines()), switched)


def host_ended(state: State, host: str, outcome: str, message: str) -> None:
    """Record a host that ends outside any step: refused, unreachable, or stopped by its settings."""
    events = _FILES.get(id(state))
    if events is None:
        return
    first, _, rest = message.strip().partition("\n")
    events.write(Event(host, "", outcome, first, tuple(rest.splitlines())))


def host_planned(state: State, host: str, step: str, sentence: str) -> None:
    """Record, while the deploy is prepared, what `step` will change on `host` (for `tailnix deploy --dry`)."""
    events = _FILES.get(id(state))
    if events is not None:
        events.write(Event(host, step, PLANNED, sentence))
