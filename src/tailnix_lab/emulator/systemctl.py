"""The emulated `systemctl` of a lab host: is-active, status, start, stop, restart over the units the
emulated activation installed (see `units`)."""

from __future__ import annotations

import sys
import time

from tailnix_lab.emulator import units

USAGE = (
    "usage: systemctl {is-active|is-failed|status|start|stop|restart} UNIT... | list-units [--state=STATE]"
)
# systemctl's LSB exit codes: 3 for "not running", 4 for "no such unit", 1 for a failed job.
EXIT_NOT_ACTIVE = 3
EXIT_NO_SUCH_UNIT = 4


def _since(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    stamp = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))
    ago = max(0, int(time.time() - timestamp))
    return f" since {stamp}; {ago}s ago"


def status_text(unit: str, lines: int = 10) -> str:
    """What `systemctl status UNIT` prints."""
    service = units.load_definition(unit)
    state = units.read_state(unit)
    active = str(state.get("ActiveState"))
    sub = str(state.get("SubState"))
    bullet = {"active": "●", "failed": "×", "activating": "●"}.get(active, "○")
    description = service.description if service else unit
    head = (
        f"{bullet} {unit} - {description}" if service and service.description != unit else f"{bullet} {unit}"
    )
    loaded = (
        f"loaded (/etc/systemd/system/{unit}; enabled; preset: ignored)"
        if service
        else "not-found (Reason: Unit not found.)"
    )
    result = f" (Result: {state.get('Result')})" if active == "failed" else f" ({sub})"
    out = [
        head,
        f"     Loaded: {loaded}",
        f"     Active: {active}{result}{_since(state.get('StateChangeTimestamp'))}",
    ]
    if state.get("MainPID"):
        out.append(f"   Main PID: {state['MainPID']}")
    tail = journal_tail(unit, lines)
    if tail:
        out.append("")
        out.extend(tail)
    return "\n".join(out)


def journal_tail(unit: str, count: int) -> list[str]:
    """The last lines of a unit's journal."""
    try:
        text = units.journal_path(unit).read_text()
    except OSError:
        return []
    return text.splitlines()[-count:] if count > 0 else []


def list_units(args: list[str]) -> int:
    """`systemctl list-units [--state=STATE] [--plain] [--no-legend]` (and `systemctl --failed`)."""
    states = [a.split("=", 1)[1] for a in args if a.startswith("--state=")]
    if "--failed" in args:
        states.append(units.FAILED)
    legend = "--no-legend" not in args
    rows = []
    for unit in units.loaded_units():
        state = units.read_state(unit)
        if states and state.get("ActiveState") not in states:
            continue
        service = units.load_definition(unit)
        description = service.description if service else unit
        rows.append(f"{unit} loaded {state.get('ActiveState')} {state.get('SubState')} {description}")
    if legend:
        print("UNIT LOAD ACTIVE SUB DESCRIPTION")
    for row in rows:
        print(row)
    if legend:
        print(f"\n{len(rows)} loaded units listed.")
    return 0


def main(argv: list[str]) -> int:
    """Run `systemctl ARGS`."""
    args = [a for a in argv if a not in ("--no-pager", "--quiet", "-q", "--no-block", "--full", "-l")]
    quiet = "--quiet" in argv or "-q" in argv
    if args and args[0] in ("list-units", "--failed"):
        return list_units(args)
    if len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 1
    verb, names = args[0], [units.unit_name(n) for n in args[1:]]
    if verb == "is-active":
        code = 0
        for unit in names:
            state = str(units.read_state(unit).get("ActiveState"))
            if not quiet:
                print(state)
            if state != units.ACTIVE:
                code = EXIT_NOT_ACTIVE
        return code
    if verb == "is-failed":
        code = 1
        for unit in names:
            state = str(units.read_state(unit).get("ActiveState"))
            if not quiet:
                print(state)
            if state == units.FAILED:
                code = 0
        return code
    if verb == "status":
        code = 0
        for unit in names:
            if units.load_definition(unit) is None:
                print(f"Unit {unit} could not be found.", file=sys.stderr)
                code = EXIT_NO_SUCH_UNIT
                continue
            print(status_text(unit))
            if units.read_state(unit).get("ActiveState") != units.ACTIVE:
                code = max(code, EXIT_NOT_ACTIVE)
        return code
    if verb in ("start", "restart", "stop"):
        code = 0
        for unit in names:
            if units.load_definition(unit) is None:
                print(f"Failed to {verb} {unit}: Unit {unit} not found.", file=sys.stderr)
                code = 5
                continue
            if verb == "stop":
                units.stop(unit)
                continue
            state = units.restart(unit) if verb == "restart" else units.start(unit)
            if state == units.FAILED:
                print(
                    f"Job for {unit} failed because the control process exited with error code.\n"
                    f'See "systemctl status {unit}" and "journalctl -xeu {unit}" for details.',
                    file=sys.stderr,
                )
                code = 1
        return code
    print(f"Unknown command verb '{verb}'.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
