# The lab's stand-in for `pkgs`: a fixed list of common packages (packages.json). A lab host has no Nix
# store worth building into, so every package is a derivation-shaped attribute set whose out path is a
# directory of the host's own lab store, where activation links the host's real commands the package
# has (`bin`).
{ lib }:
let
  storeDir = "/var/lib/tailnix-lab/store";
  # name = { version; mainProgram (when nixpkgs declares one); bin (the commands the package has) }.
  # The activation reads the same file to give each package its own `bin` directory.
  packages = builtins.fromJSON (builtins.readFile ./packages.json);
  mkPackage = pname: info: {
    type = "derivation";
    inherit pname;
    inherit (info) version;
    name = "${pname}-${info.version}";
    # Each package is a directory of its own, as a store path is: a unit's PATH holds only its `path`.
    outPath = "${storeDir}/${pname}-${info.version}";
    meta = lib.optionalAttrs (info ? mainProgram) { inherit (info) mainProgram; };
  };
  packageSet = lib.mapAttrs mkPackage packages;
  hostPlatform = { system = "x86_64-linux"; isLinux = true; isx86_64 = true; isAarch64 = false; };
in
packageSet
// {
  inherit lib;
  system = hostPlatform.system;
  stdenv = { inherit hostPlatform; buildPlatform = hostPlatform; isLinux = true; };
  # `runtimeShell` is what NixOS writes into the `#!` line of unit scripts.
  runtimeShell = "/run/current-system/sw/bin/bash";
  linuxPackages = { };
  linuxPackages_latest = { };
}
