"""The emulated `journalctl` of a lab host: `journalctl -u UNIT [-n N] [--no-pager]`."""

from __future__ import annotations

import sys

from tailnix_lab.emulator import units


def main(argv: list[str]) -> int:
    """Run `journalctl ARGS`."""
    selected: list[str] = []
    count: int | None = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-u", "--unit"):
            if not args:
                print("journalctl: option requires an argument -- 'u'", file=sys.stderr)
                return 1
            selected.append(units.unit_name(args.pop(0)))
        elif arg.startswith("--unit="):
            selected.append(units.unit_name(arg.split("=", 1)[1]))
        elif arg in ("-n", "--lines"):
            if not args or not args[0].isdigit():
                print("Failed to parse lines", file=sys.stderr)
                return 1
            count = int(args.pop(0))
        elif arg.startswith("--lines="):
            count = int(arg.split("=", 1)[1])
        elif arg.startswith("-n") and arg[2:].isdigit():
            count = int(arg[2:])
        elif arg in ("--no-pager", "-x", "-e", "-xe", "-b", "--boot", "-q", "--quiet"):
            continue
        else:
            print(f"journalctl: unrecognized option '{arg}'", file=sys.stderr)
            return 1
    names = selected or sorted(p.name[: -len(".log")] for p in units.journal_path("x").parent.glob("*.log"))
    lines: list[str] = []
    for unit in names:
        try:
            lines.extend(units.journal_path(unit).read_text().splitlines())
        except OSError:
            continue
    if count is not None:
        lines = lines[-count:] if count > 0 else []
    if not lines:
        print("-- No entries --")
        return 0
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
