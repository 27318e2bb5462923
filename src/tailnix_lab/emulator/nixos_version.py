"""Emulated `nixos-version`: the release of the running NixOS system, read from `/etc/os-release`.

Behaves as NixOS's own script: no argument prints `25.11.20251120.abcdef0 (Xantusia)`, `--hash`
and `--revision` print the nixpkgs commit, `--json` prints both, `--configuration-revision` fails
because the stock system does not set `system.configurationRevision`. Any other argument prints the
version, as the real script's catch-all case does.
"""

from __future__ import annotations

import json
import re
import sys

from tailnix_lab.emulator.hostroot import host_path
from tailnix_lab.stock import NIXPKGS_REVISION

PROGRAM = "/run/current-system/sw/bin/nixos-version"


def read_os_release() -> dict[str, str]:
    """Parse the host's `/etc/os-release` into its fields, unquoted."""
    fields: dict[str, str] = {}
    for line in host_path("/etc/os-release").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            fields[name.strip()] = value.strip().strip('"')
    return fields


def main(argv: list[str]) -> int:
    """Run `nixos-version ARGV` and return its exit code."""
    try:
        release = read_os_release()
    except FileNotFoundError:
        print(f"{PROGRAM}: /etc/os-release is missing", file=sys.stderr)
        return 1
    version = release.get("BUILD_ID", "")
    codename_match = re.search(r"\(([^)]*)\)", release.get("VERSION", ""))
    if release.get("ID") != "nixos" or not version or codename_match is None:
        print(f"{PROGRAM}: this is not a NixOS system", file=sys.stderr)
        return 1
    codename = codename_match.group(1)
    option = argv[0] if argv else ""
    if option in ("--hash", "--revision"):
        print(NIXPKGS_REVISION)
    elif option == "--configuration-revision":
        print(f"{PROGRAM}: configuration revision is unknown", file=sys.stderr)
        return 1
    elif option == "--json":
        print(json.dumps({"nixosVersion": version, "nixpkgsRevision": NIXPKGS_REVISION}))
    else:
        print(f"{version} ({codename})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
