"""The emulated `nixos-rebuild` of a lab host.

`nixos-rebuild {switch,boot,test,build,dry-build} [--rollback] [--show-trace] [-I nixos-config=PATH]`
reads `/etc/nixos/configuration.nix` (or `NIXOS_CONFIG`, or `-I nixos-config=`), parses every `.nix`
file under `/etc/nixos` with the real `nix-instantiate --parse`, evaluates the configuration with the
real Nix evaluator and the lab's module system (`eval.nix`), and activates it (`activation`).

Exit codes as the real one: 0 done, 1 a parse, evaluation or usage error, 2 activation failed,
4 a unit failed while switching.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tailnix.lab.emulator import activation
from tailnix.lab.emulator.hostroot import host_path

ACTIONS = ("switch", "boot", "test", "build", "dry-build", "dry-activate")
DEFAULT_CONFIG = "/etc/nixos/configuration.nix"
EVALUATOR = Path(__file__).with_name("eval.nix")
# No build users exist on a lab host; root evaluates alone, as with a single-user Nix.
NIX_CONFIG = "build-users-group ="
USAGE = (
    "Usage: nixos-rebuild [--verbose] [--show-trace] [--rollback] [-I nixos-config=PATH]\n"
    "                     {switch | boot | test | build | dry-build | dry-activate}"
)


class RebuildError(Exception):
    """Stops the rebuild with Nix's own message and exit status 1."""


def nix_environment() -> dict[str, str]:
    """The environment nix-instantiate runs in."""
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG
    return env


def parse_files(config_dir: Path) -> None:
    """Check the syntax of every `.nix` file of the configuration, as Nix would on evaluation."""
    for path in sorted(config_dir.rglob("*.nix")):
        done = subprocess.run(
            ["nix-instantiate", "--store", "dummy://", "--parse", str(path)],
            capture_output=True,
            text=True,
            env=nix_environment(),
            check=False,
        )
        if done.returncode != 0:
            raise RebuildError(_nix_message(done.stderr))


def evaluate(config_file: Path, show_trace: bool) -> dict[str, Any]:
    """Evaluate the configuration; returns the merged configuration and its warnings."""
    if not config_file.exists():
        raise RebuildError(f"error: getting status of '{config_file}': No such file or directory")
    command = [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        str(EVALUATOR),
        "--argstr",
        "configurationFile",
        str(config_file),
    ]
    if show_trace:
        command.append("--show-trace")
    done = subprocess.run(command, capture_output=True, text=True, env=nix_environment(), check=False)
    if done.returncode != 0:
        raise RebuildError(_nix_message(done.stderr))
    for line in done.stderr.splitlines():
        if line.startswith("trace: ") or line.startswith("evaluation warning"):
            print(line, file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    for warning in result.get("warnings") or []:
        print(f"evaluation warning: {warning}", file=sys.stderr)
    return result


def _nix_message(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "build-users-group" not in line]
    return "\n".join(lines).strip() or "error: nix-instantiate failed"


def config_location(args: list[str]) -> tuple[str, list[str]]:
    """Where the configuration is (`-I nixos-config=`, `NIXOS_CONFIG`, default) and the other args."""
    location = os.environ.get("NIXOS_CONFIG") or DEFAULT_CONFIG
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        value = None
        if arg in ("-I", "--include") and index + 1 < len(args):
            value = args[index + 1]
            index += 2
        elif arg.startswith("-I") and len(arg) > 2:
            value = arg[2:]
            index += 1
        else:
            rest.append(arg)
            index += 1
            continue
        if value.startswith("nixos-config="):
            location = value.split("=", 1)[1]
    return location, rest


def rollback(action: str) -> int:
    """`--rollback`: make the generation before the current default the running one."""
    current = activation.default_generation()
    older = [g for g in activation.generations() if current is None or g.number < current.number]
    if current is None or not older:
        number = current.number if current else 0
        print(f"error: no generation older than the current ({number}) exists", file=sys.stderr)
        return 1
    target = older[-1]
    if action in ("switch", "boot"):
        print(f"switching profile from version {current.number} to {target.number}", file=sys.stderr)
        return finish(activation.switch_to_configuration(target, action))
    return finish(activation.switch_to_configuration(target, "test"))


def finish(status: int) -> int:
    """Report the end of a switch as nixos-rebuild does."""
    if status != 0:
        print("warning: error(s) occurred while switching to the new configuration", file=sys.stderr)
    return status


def main(argv: list[str]) -> int:
    """Run `nixos-rebuild ARGS`."""
    location, args = config_location(argv)
    show_trace = "--show-trace" in args
    do_rollback = "--rollback" in args
    positional = []
    for arg in args:
        if arg in ("--show-trace", "--rollback", "--verbose", "-v", "--fast", "--no-build-nix"):
            continue
        if arg.startswith("-"):
            print(f"error: unknown option `{arg}'", file=sys.stderr)
            print(USAGE, file=sys.stderr)
            return 1
        positional.append(arg)
    if len(positional) != 1 or positional[0] not in ACTIONS:
        print(USAGE, file=sys.stderr)
        return 1
    action = positional[0]
    if do_rollback:
        if action not in ("switch", "boot", "test"):
            print(f"error: --rollback is not supported for {action}", file=sys.stderr)
            return 1
        return rollback(action)

    config_file = host_path(location)
    print("building the system configuration...", file=sys.stderr, flush=True)
    try:
        parse_files(host_path("/etc/nixos"))
        if config_file.parent != host_path("/etc/nixos") and config_file.parent.is_dir():
            parse_files(config_file.parent)
        evaluated = evaluate(config_file, show_trace)
    except RebuildError as err:
        print(err, file=sys.stderr)
        return 1
    if action in ("build", "dry-build", "dry-activate"):
        return 0
    generation = activation.add_generation(evaluated)
    return finish(activation.switch_to_configuration(generation, action))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
