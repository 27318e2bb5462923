# The lab's stand-in for sops-nix's flake (github:Mic92/sops-nix): its NixOS module outputs, the
# same module `modules/sops` that a non-flake host fetches with `builtins.fetchTarball`.
{
  description = "Integrates sops into nixos";
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";

  outputs = { self, nixpkgs }: {
    nixosModules = {
      sops = ./modules/sops;
      default = self.nixosModules.sops;
    };
  };
}
