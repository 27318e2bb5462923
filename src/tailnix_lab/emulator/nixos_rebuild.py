"""The emulated `nixos-rebuild` of a lab host.

`nixos-rebuild {switch,boot,test,build,dry-build} [--rollback] [--show-trace] [-I nixos-config=PATH]`
reads `/etc/nixos/configuration.nix` (or `NIXOS_CONFIG`, or `-I nixos-config=`), parses every `.nix`
file under `/etc/nixos` with the real `nix-instantiate --parse`, evaluates the configuration with the
real Nix evaluator and the lab's module system (`eval.nix`), and activates it (`activation`).

`--flake REF[#NAME]` (and, as the real one, no `--flake` at all when `/etc/nixos/flake.nix` exists,
unless `--no-flake`) evaluates `nixosConfigurations.NAME` (NAME defaults to the host name) of the
flake with the real `nix eval`, in pure mode as real flakes are: a git flake sees only the files git
tracks, and inputs come from `flake.lock`, which the lab's stand-ins satisfy (`flake_inputs`). The
lab never writes flake.lock: an input missing from it is an error.

Building checks what real builds check (`build`): unit scripts and the sops-nix manifest.

Exit codes as the real one: 0 done, 1 a parse, evaluation, build or usage error, 2 activation failed,
4 a unit failed while switching.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tailnix_lab.emulator import activation, build, flake_inputs
from tailnix_lab.emulator.hostroot import host_path

ACTIONS = ("switch", "boot", "test", "build", "dry-build", "dry-activate")
DEFAULT_CONFIG = "/etc/nixos/configuration.nix"
EVALUATOR = Path(__file__).with_name("eval.nix")
# No build users exist on a lab host; root evaluates alone, as with a single-user Nix.
NIX_CONFIG = "build-users-group ="
USAGE = (
    "Usage: nixos-rebuild [--verbose] [--show-trace] [--rollback] [-I nixos-config=PATH]\n"
    "                     [--flake FLAKE[#NAME] | --no-flake] [--impure]\n"
    "                     {switch | boot | test | build | dry-build | dry-activate}"
)
DEFAULT_FLAKE = "/etc/nixos/flake.nix"
# Flakes are an experimental feature of Nix; nixos-rebuild turns them on for its own Nix calls.
# The lab has no flake registry (no network) and gives up on a download at once.
FLAKE_NIX_CONFIG = "\n".join(
    [
        NIX_CONFIG,
        "experimental-features = nix-command flakes",
        "flake-registry = /dev/null",
        "download-attempts = 1",
        "connect-timeout = 1",
    ]
)
# What `nix build` of the system would force, as data the activation reads.
LAB_RESULT = "toplevel: toplevel.labResult"
LOCK_FILE_REFUSAL = "requires lock file changes but they're not allowed"
# The lab's Nix (2.8) words a file missing from a flake's source differently from the Nix of NixOS
# 25.11; say it as the host's Nix would.
MISSING_SOURCE_FILE = re.compile(r"error: getting status of '(/nix/store/[^']*)': No such file or directory")


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


def flake_reference(value: str) -> tuple[str, str]:
    """Split `--flake FLAKE[#NAME]`; NAME defaults to the host name, as in nixos-rebuild."""
    flake, _, name = value.partition("#")
    if not name:
        name = host_name()
    if flake.startswith("/"):
        flake = str(host_path(flake))
    elif flake.startswith(("path:/", "git+file:/")):
        scheme, _, location = flake.partition(":")
        flake = f"{scheme}:{host_path(location.removeprefix('//'))}"
    return flake, name


def host_name() -> str:
    """The host's name, which names its `nixosConfigurations` attribute by default."""
    hostname_file = host_path("/etc/hostname")
    if hostname_file.is_file() and hostname_file.read_text().strip():
        return hostname_file.read_text().strip()
    return os.uname().nodename


def evaluate_flake(flake: str, name: str, show_trace: bool, impure: bool) -> dict[str, Any]:
    """Evaluate `FLAKE#nixosConfigurations.NAME` as `nixos-rebuild --flake` builds it."""
    try:
        flake_inputs.add_all_to_store()
    except RuntimeError as err:
        raise RebuildError(f"error: the lab's flake input stand-ins are not available: {err}") from err
    attribute = f'nixosConfigurations."{name}".config.system.build.toplevel'
    command = [
        "nix",
        "eval",
        "--json",
        # The lab never writes flake.lock; real Nix would, to lock an input it lacks.
        "--no-update-lock-file",
        f"{flake}#{attribute}",
        "--apply",
        LAB_RESULT,
    ]
    if show_trace:
        command.append("--show-trace")
    if impure:
        command.append("--impure")
    env = nix_environment()
    env["NIX_CONFIG"] = FLAKE_NIX_CONFIG
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        message = MISSING_SOURCE_FILE.sub(r"error: path '\1' does not exist", _nix_message(done.stderr))
        if LOCK_FILE_REFUSAL in message:
            message += (
                "\nerror: (lab) flake.lock lacks an input that flake.nix declares. The lab never writes"
                " flake.lock; lock the input in flake.lock (the lab provides "
                + ", ".join(f"'{s.name}' = {s.url}" for s in flake_inputs.STANDINS.values())
                + ")."
            )
        raise RebuildError(message)
    for line in done.stderr.splitlines():
        if line.startswith(("warning: ", "trace: ", "evaluation warning")):
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
    impure = "--impure" in args
    flake: str | None = None
    no_flake = False
    positional = []
    expect_flake = False
    for arg in args:
        if expect_flake:
            flake, expect_flake = arg, False
            continue
        if arg == "--flake":
            expect_flake = True
            continue
        if arg.startswith("--flake="):
            flake = arg.split("=", 1)[1]
            continue
        if arg == "--no-flake":
            no_flake = True
            continue
        if arg in (
            "--show-trace",
            "--rollback",
            "--verbose",
            "-v",
            "--fast",
            "--no-build-nix",
            "--impure",
            # Passed on to Nix; the lab never writes flake.lock anyway.
            "--no-update-lock-file",
            "--no-write-lock-file",
        ):
            continue
        if arg.startswith("-"):
            print(f"error: unknown option `{arg}'", file=sys.stderr)
            print(USAGE, file=sys.stderr)
            return 1
        positional.append(arg)
    if expect_flake:
        print("error: option `--flake' requires an argument", file=sys.stderr)
        return 1
    if len(positional) != 1 or positional[0] not in ACTIONS:
        print(USAGE, file=sys.stderr)
        return 1
    if flake is None and not no_flake and host_path(DEFAULT_FLAKE).exists():
        # nixos-rebuild uses /etc/nixos as a flake by itself when it holds a flake.nix.
        flake = str(Path(DEFAULT_FLAKE).parent)
    action = positional[0]
    if do_rollback:
        if action not in ("switch", "boot", "test"):
            print(f"error: --rollback is not supported for {action}", file=sys.stderr)
            return 1
        return rollback(action)

    print("building the system configuration...", file=sys.stderr, flush=True)
    if flake is not None and not no_flake:
        try:
            evaluated = evaluate_flake(*flake_reference(flake), show_trace, impure)
        except RebuildError as err:
            print(err, file=sys.stderr)
            return 1
        return activate(evaluated, action)
    config_file = host_path(location)
    try:
        parse_files(host_path("/etc/nixos"))
        if config_file.parent != host_path("/etc/nixos") and config_file.parent.is_dir():
            parse_files(config_file.parent)
        evaluated = evaluate(config_file, show_trace)
    except RebuildError as err:
        print(err, file=sys.stderr)
        return 1
    return activate(evaluated, action)


def activate(evaluated: dict[str, Any], action: str) -> int:
    """Make the evaluated configuration a generation and switch to it, as the action asks."""
    if action in ("dry-build", "dry-activate"):
        return 0
    try:
        build.check(evaluated["config"])
    except build.BuildError as err:
        print(err, file=sys.stderr)
        return 1
    if action == "build":
        return 0
    generation = activation.add_generation(evaluated)
    return finish(activation.switch_to_configuration(generation, action))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
