# Evaluate a channel host's NixOS configuration (`/etc/nixos/configuration.nix`) the way the lab's
# emulated `nixos-rebuild` needs it: see `eval-config.nix` for what is checked and returned.
{ configurationFile }:
(import ./eval-config.nix { modules = [ (/. + configurationFile) ]; }).labResult
