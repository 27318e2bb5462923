"""What a host's flake.nix says about how tailnix's module reaches the system, read from its text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tailnix import paths
from tailnix.nix_imports import ImportEditError, tokenize

_SOPS_NIX_INPUT = re.compile(r"(^|\.)sops-nix(\.|$)")


@dataclass(frozen=True)
class FlakeShape:
    """The parts of a flake.nix that matter to the deploy."""

    builds_configuration_nix: bool
    """Some module list names ./configuration.nix, so importing the module there reaches the system."""
    imports_module: bool
    """flake.nix names ./tailscale-autoconnect.nix itself."""
    has_sops_nix_input: bool
    uses_sops_nix_module: bool
    """The flake imports `sops-nix.nixosModules.*`: the module must not bring a second sops-nix."""


def read_flake(text: str) -> FlakeShape:
    """Read a flake.nix (comments do not count). Raises ImportEditError when it does not tokenize."""
    words = [token.text for token in tokenize(text) if token.kind == "word"]
    return FlakeShape(
        builds_configuration_nix="./configuration.nix" in words,
        imports_module=paths.MODULE_IMPORT in words,
        has_sops_nix_input=any(_SOPS_NIX_INPUT.search(word) for word in words),
        uses_sops_nix_module=any("sops-nix.nixosModules." in word for word in words),
    )


__all__ = ["FlakeShape", "ImportEditError", "read_flake"]
