# Evaluate a NixOS configuration the way the lab's emulated `nixos-rebuild` needs it: merge the
# configuration with the stand-in NixOS option declarations, report what NixOS would report
# (undeclared options, type errors, failed assertions), and return the merged configuration as
# JSON. Paths are returned as strings, so nothing (secrets files included) is copied to the store.
{ configurationFile }:
let
  lib = import ./lib.nix;
  pkgs = import ./pkgs.nix { inherit lib; };

  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      { _file = toString ./eval.nix; _module.args.pkgs = pkgs; }
      (/. + configurationFile)
    ];
    specialArgs.modulesPath = ./nixos-modules;
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
in
builtins.seq evaluated.forceDefined (builtins.seq assertionsHold {
  config = jsonValue config;
  warnings = config.warnings;
})
