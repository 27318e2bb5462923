# The lab's stand-in for the nixpkgs flake (github:NixOS/nixpkgs/nixos-25.11): the outputs a NixOS
# flake uses, with nixpkgs' names. `lib.nixosSystem` evaluates modules with the lab's module system
# and NixOS option stand-ins (`eval-config.nix`), `legacyPackages` is the lab's package stand-in.
#
# The lab assembles this tree (this file beside the emulator's lib.nix, pkgs.nix,
# nixos-options.nix, eval-config.nix and nixos-modules/) and adds it to the Nix store; a lab host's
# flake.lock pins it by its NAR hash, so Nix finds it there instead of downloading nixpkgs.
{
  description = "A collection of packages for the Nix package manager";

  outputs = { self }:
    let
      standinLib = import ./lib.nix;
      systems = [ "x86_64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
    in
    {
      lib = standinLib // {
        # As nixpkgs' flake defines it: eval-config.nix with the caller's arguments. `system` may be
        # null (nixpkgs.hostPlatform from hardware-configuration.nix then says it).
        nixosSystem = args:
          import ./eval-config.nix ({ lib = self.lib; system = null; } // args);
      };

      legacyPackages = forAllSystems (system: import ./pkgs.nix { lib = standinLib; });

      nixosModules = {
        notDetected = ./nixos-modules/installer/scan/not-detected.nix;
      };
    };
}
