"""The flake inputs a lab host can use without a network: stand-ins for nixpkgs and sops-nix.

A NixOS flake names its inputs by URL (`github:NixOS/nixpkgs/nixos-25.11`) and `flake.lock` pins
each one by revision and NAR hash. Real Nix does not download an input whose locked NAR hash is
already a valid store path: it uses that path. So the lab assembles each stand-in's tree, adds it to
the Nix store as a fixed-output `source` path, and writes the host's `flake.lock` with the stand-in's
NAR hash. The host's real Nix then evaluates the flake exactly as written, in pure mode, and an input
the lab does not provide fails the way an unreachable one does ("unable to download ...").

Used inside lab hosts by the emulated `nixos-rebuild` (standard library only), and by the lab when it
writes a host's flake.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMULATOR_DIR = Path(__file__).resolve().parent
# The files of the emulator that make up the nixpkgs stand-in, besides its flake.nix.
NIXPKGS_STANDIN_FILES = ("lib.nix", "pkgs.nix", "packages.json", "nixos-options.nix", "eval-config.nix")
NIXPKGS_STANDIN_DIRS = ("nixos-modules",)
# Nix without a daemon, as root: no build users exist on a lab host.
NIX_CONFIG = "build-users-group ="


@dataclass(frozen=True)
class FlakeInputStandin:
    """One upstream flake the lab stands in for, and how its lock entry reads."""

    name: str
    """The input name users give it (`inputs.<name>.url`)."""
    owner: str
    repo: str
    ref: str | None
    """The branch in the input's URL (`github:OWNER/REPO/REF`), if any."""
    rev: str
    last_modified: int

    @property
    def url(self) -> str:
        """The input URL a user writes for it."""
        return f"github:{self.owner}/{self.repo}" + (f"/{self.ref}" if self.ref else "")


NIXPKGS = FlakeInputStandin(
    name="nixpkgs",
    owner="NixOS",
    repo="nixpkgs",
    ref="nixos-25.11",
    # The stock system's nixpkgs commit (`stock.NIXPKGS_REVISION`): one source of truth for both.
    rev="abcdef0123456789abcdef0123456789abcdef01",
    last_modified=1763622513,
)
SOPS_NIX = FlakeInputStandin(
    name="sops-nix",
    owner="Mic92",
    repo="sops-nix",
    ref=None,
    rev="56b24064fdcaedca53553b1a6d607fd23b613a24",
    last_modified=1782130716,
)
STANDINS = {standin.name: standin for standin in (NIXPKGS, SOPS_NIX)}


@dataclass(frozen=True)
class StorePin:
    """Where a stand-in's tree is in the Nix store, and the NAR hash `flake.lock` pins it with."""

    store_path: str
    nar_hash: str
    """SRI form, as flake.lock writes it: `sha256-...`."""


def nix_environment() -> dict[str, str]:
    """The environment Nix commands run in on a lab host."""
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG
    return env


def assemble(standin: FlakeInputStandin, directory: Path) -> Path:
    """Write the stand-in's source tree as `directory/source`; return that path."""
    tree = directory / "source"
    if standin is NIXPKGS:
        tree.mkdir()
        shutil.copyfile(EMULATOR_DIR / "nixpkgs-standin" / "flake.nix", tree / "flake.nix")
        for name in NIXPKGS_STANDIN_FILES:
            shutil.copyfile(EMULATOR_DIR / name, tree / name)
        for name in NIXPKGS_STANDIN_DIRS:
            shutil.copytree(EMULATOR_DIR / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    elif standin is SOPS_NIX:
        shutil.copytree(EMULATOR_DIR / "sops-nix-standin", tree, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        raise ValueError(f"no stand-in tree for flake input {standin.name!r}")
    # The NAR of a tree records only the executable bit: fix the modes so the hash is the same
    # whatever the checkout's umask was.
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return tree


def add_to_store(standin: FlakeInputStandin) -> StorePin:
    """Add the stand-in's tree to the Nix store (nothing happens if it is there); return its pin."""
    with tempfile.TemporaryDirectory(prefix=f"tailnix-{standin.name}-") as scratch:
        tree = assemble(standin, Path(scratch))
        env = nix_environment()
        hex_hash = _run(["nix-hash", "--type", "sha256", str(tree)], env).strip()
        store_path = _run(["nix-store", "--add-fixed", "--recursive", "sha256", str(tree)], env).strip()
    nar_hash = "sha256-" + base64.b64encode(bytes.fromhex(hex_hash)).decode()
    return StorePin(store_path=store_path, nar_hash=nar_hash)


def add_all_to_store() -> dict[str, StorePin]:
    """Make every stand-in available to Nix; returns input name -> pin."""
    return {name: add_to_store(standin) for name, standin in STANDINS.items()}


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def lock_node(
    standin: FlakeInputStandin, pin: StorePin, inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `flake.lock` node of a GitHub input locked to the stand-in, as Nix writes it."""
    original: dict[str, Any] = {"owner": standin.owner, "repo": standin.repo, "type": "github"}
    if standin.ref:
        original["ref"] = standin.ref
    node: dict[str, Any] = {}
    if inputs:
        node["inputs"] = inputs
    node["locked"] = {
        "lastModified": standin.last_modified,
        "narHash": pin.nar_hash,
        "owner": standin.owner,
        "repo": standin.repo,
        "rev": standin.rev,
        "type": "github",
    }
    node["original"] = dict(sorted(original.items()))
    return node


def flake_lock(inputs: list[str], pins: dict[str, StorePin]) -> dict[str, Any]:
    """The `flake.lock` of a flake whose inputs are these stand-ins (by input name).

    A `sops-nix` input follows the flake's `nixpkgs` (`inputs.sops-nix.inputs.nixpkgs.follows =
    "nixpkgs"`, as sops-nix's README shows); without a `nixpkgs` input it gets its own node.
    """
    nodes: dict[str, Any] = {}
    root_inputs: dict[str, Any] = {}
    for name in inputs:
        if name not in STANDINS:
            raise ValueError(
                f"the lab has no stand-in for flake input {name!r}; it has {', '.join(STANDINS)}"
            )
        standin = STANDINS[name]
        node_inputs: dict[str, Any] | None = None
        if standin is SOPS_NIX:
            if "nixpkgs" in inputs:
                node_inputs = {"nixpkgs": ["nixpkgs"]}
            else:
                nodes["nixpkgs_2"] = lock_node(
                    FlakeInputStandin(
                        "nixpkgs", "NixOS", "nixpkgs", "nixpkgs-unstable", NIXPKGS.rev, NIXPKGS.last_modified
                    ),
                    pins["nixpkgs"],
                )
                node_inputs = {"nixpkgs": "nixpkgs_2"}
        nodes[name] = lock_node(standin, pins[name], node_inputs)
        root_inputs[name] = name
    nodes["root"] = {"inputs": root_inputs}
    return {"nodes": dict(sorted(nodes.items())), "root": "root", "version": 7}
