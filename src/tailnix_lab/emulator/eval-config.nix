# The lab's stand-in for nixpkgs' `nixos/lib/eval-config.nix`: evaluate NixOS modules together with
# the stand-in option declarations, and give the result NixOS's shape (`config`, `options`, `pkgs`,
# `config.system.build.toplevel`). Both the channel path (`eval.nix`) and the flake path
# (`lib.nixosSystem` of the nixpkgs stand-in) come through here, so both are equally strict.
#
# `labResult` is what the emulated activation reads: the merged configuration as JSON-safe data
# and the warnings, after NixOS's checks (undeclared options, types, assertions) have passed.
# Paths are turned into strings, so nothing (secrets files included) is copied to the store.
{
  modules,
  specialArgs ? { },
  # Accepted as eval-config.nix accepts them; the lab has one platform and one package set.
  system ? null,
  pkgs ? null,
  extraModules ? [ ],
  prefix ? [ ],
  check ? true,
  lib ? import ./lib.nix,
}:
let
  standinPkgs = import ./pkgs.nix { inherit lib; };

  evaluated = lib.evalModules {
    inherit prefix;
    modules = [
      ./nixos-options.nix
      {
        _file = toString ./eval-config.nix;
        _module.args.pkgs = if pkgs != null then pkgs else standinPkgs;
        _module.check = check;
        system.build.toplevel = toplevel;
      }
    ] ++ modules ++ extraModules;
    specialArgs = { modulesPath = ./nixos-modules; } // specialArgs;
  };
  inherit (evaluated) config;

  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  assertionsHold =
    failedAssertions == [ ]
    || throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failedAssertions}";

  # JSON-safe copy of a value; options that have no value are left out.
  jsonValue = v:
    if builtins.isPath v then toString v
    else if builtins.isFunction v then null
    else if builtins.isList v then map jsonValue v
    else if lib.isDerivation v then {
      _type = "derivation";
      inherit (v) name outPath;
      pname = v.pname or null;
      mainProgram = v.meta.mainProgram or null;
    }
    else if builtins.isAttrs v then
      builtins.listToAttrs (lib.concatMap (name:
        let r = builtins.tryEval v.${name}; in
        if r.success then [ (lib.nameValuePair name (jsonValue r.value)) ] else [ ]) (builtins.attrNames v))
    else v;

  labResult = builtins.seq evaluated.forceDefined (builtins.seq assertionsHold {
    config = jsonValue config;
    warnings = config.warnings;
  });

  # The system derivation's stand-in: building it means evaluating everything above.
  toplevel = {
    type = "derivation";
    name = "nixos-system-${config.networking.hostName}-${config.system.nixos.release}";
    outPath = "/run/current-system";
    inherit labResult;
  };
in
{
  inherit (evaluated) options;
  inherit config labResult lib;
  pkgs = config._module.args.pkgs;
  _type = "configuration";
  class = "nixos";
}
