# The lab's stand-in for nixpkgs `lib`: only functions that exist in nixpkgs lib, with the same
# names and semantics, and a small module system (evalModules, mkIf, mkMerge, priorities, orders,
# typed options) that reports the errors NixOS reports, in NixOS's words.
let
  inherit (builtins)
    all any attrNames attrValues concatLists concatMap concatStringsSep elem elemAt filter
    foldl' functionArgs genList hasAttr head isAttrs isBool isFunction isInt isList isPath
    isString length listToAttrs mapAttrs match removeAttrs replaceStrings seq sort stringLength
    substring tail typeOf
    ;

  lib = rec {
    # -- trivial ------------------------------------------------------------------------------
    id = x: x;
    const = x: _: x;
    flip = f: a: b: f b a;
    pipe = builtins.foldl' (x: f: f x);
    boolToString = b: if b then "true" else "false";
    min = a: b: if a < b then a else b;
    max = a: b: if a > b then a else b;
    warn = msg: builtins.trace "evaluation warning: ${msg}";
    warnIf = cond: msg: if cond then warn msg else id;
    throwIf = cond: msg: if cond then throw msg else id;
    throwIfNot = cond: msg: if cond then id else throw msg;
    assertMsg = pred: msg: pred || throw msg;
    mdDoc = x: x;
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    trivial = { inherit id const flip pipe boolToString min max warn warnIf throwIf throwIfNot; };

    # -- lists ---------------------------------------------------------------------------------
    inherit all any concatLists concatMap elem elemAt filter foldl' genList head length tail;
    inherit isAttrs isBool isFunction isInt isList isPath isString typeOf seq match replaceStrings
      stringLength substring hasAttr;
    inherit (builtins) isFloat deepSeq split toJSON fromJSON readFile pathExists baseNameOf dirOf
      trace sort groupBy intersectAttrs functionArgs;
    setFunctionArgs = f: args: { __functor = self: f; __functionArgs = args; };
    fix = f: let x = f x; in x;
    foldr = op: nul: list: let len = length list; fold' = n: if n == len then nul else op (elemAt list n) (fold' (n + 1)); in fold' 0;
    toList = x: if isList x then x else [ x ];
    optional = cond: elem: if cond then [ elem ] else [ ];
    optionals = cond: elems: if cond then elems else [ ];
    imap0 = f: list: genList (n: f n (elemAt list n)) (length list);
    imap1 = f: list: genList (n: f (n + 1) (elemAt list n)) (length list);
    last = list: assert list != [ ]; elemAt list (length list - 1);
    init = list: assert list != [ ]; genList (elemAt list) (length list - 1);
    take = count: list: genList (elemAt list) (min count (length list));
    drop = count: list: let len = length list; in genList (n: elemAt list (n + count)) (if count >= len then 0 else len - count);
    range = first: last': if first > last' then [ ] else genList (n: first + n) (last' - first + 1);
    flatten = x: if isList x then concatMap flatten x else [ x ];
    unique = foldl' (acc: e: if elem e acc then acc else acc ++ [ e ]) [ ];
    findFirst = pred: default: list: let found = filter pred list; in if found == [ ] then default else head found;
    partition = builtins.partition;
    remove = e: filter (x: x != e);
    reverseList = xs: let l = length xs; in genList (n: elemAt xs (l - n - 1)) l;
    lists = { inherit toList optional optionals imap0 imap1 last init take drop range flatten unique findFirst remove reverseList foldr; };

    # -- strings -------------------------------------------------------------------------------
    inherit concatStringsSep;
    concatStrings = concatStringsSep "";
    concatMapStrings = f: list: concatStringsSep "" (map f list);
    concatMapStringsSep = sep: f: list: concatStringsSep sep (map f list);
    concatLines = list: concatStringsSep "" (map (l: l + "\n") list);
    optionalString = cond: string: if cond then string else "";
    hasPrefix = pref: str: substring 0 (stringLength pref) str == pref;
    hasSuffix = suffix: content:
      let lenContent = stringLength content; lenSuffix = stringLength suffix; in
      lenContent >= lenSuffix && substring (lenContent - lenSuffix) lenContent content == suffix;
    hasInfix = infix: content: match ".*${escapeRegex infix}.*" content != null;
    removePrefix = prefix: str: if hasPrefix prefix str then substring (stringLength prefix) (stringLength str) str else str;
    removeSuffix = suffix: str:
      if hasSuffix suffix str then substring 0 (stringLength str - stringLength suffix) str else str;
    escapeRegex = escape (lib.stringToCharacters "\\[{()^$?*+|.");
    stringToCharacters = s: genList (p: substring p 1 s) (stringLength s);
    escape = list: replaceStrings list (map (c: "\\${c}") list);
    splitString = sep: s: filter isString (builtins.split (escapeRegex (toString sep)) (toString s));
    toUpper = replaceStrings lowerChars upperChars;
    toLower = replaceStrings upperChars lowerChars;
    lowerChars = stringToCharacters "abcdefghijklmnopqrstuvwxyz";
    upperChars = stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    escapeShellArg = arg:
      let string = toString arg; in
      if match "[[:alnum:],._+:@%/-]+" string == null
      then "'${replaceStrings [ "'" ] [ "'\\''" ] string}'"
      else string;
    escapeShellArgs = concatMapStringsSep " " escapeShellArg;
    escapeNixString = s: "\"${replaceStrings [ "\\" "\"" "\n" "\${" ] [ "\\\\" "\\\"" "\\n" "\\\${" ] s}\"";
    isStringLike = x: isString x || isPath x || x ? outPath || x ? __toString;
    isStorePath = x: isStringLike x && hasPrefix "/nix/store/" (toString x);
    fileContents = file: removeSuffix "\n" (builtins.readFile file);
    stringAfter = deps: text: { inherit text deps; };
    strings = {
      inherit concatStrings concatMapStrings concatMapStringsSep concatLines optionalString hasPrefix
        hasSuffix hasInfix removePrefix removeSuffix splitString toUpper toLower escapeShellArg
        escapeShellArgs escapeNixString isStringLike isStorePath fileContents escapeRegex escape
        stringToCharacters concatStringsSep;
    };

    # -- attribute sets ------------------------------------------------------------------------
    inherit attrNames attrValues mapAttrs removeAttrs listToAttrs;
    catAttrs = builtins.catAttrs;
    zipAttrsWith = builtins.zipAttrsWith;
    filterAttrs = pred: set: removeAttrs set (filter (name: !pred name set.${name}) (attrNames set));
    mapAttrs' = f: set: listToAttrs (map (attr: f attr set.${attr}) (attrNames set));
    mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (attrNames attrs);
    nameValuePair = name: value: { inherit name value; };
    genAttrs = names: f: listToAttrs (map (n: nameValuePair n (f n)) names);
    attrByPath = attrPath: default: set:
      if attrPath == [ ] then set
      else if isAttrs set && set ? ${head attrPath} then attrByPath (tail attrPath) default set.${head attrPath}
      else default;
    hasAttrByPath = attrPath: set:
      attrPath == [ ] || (isAttrs set && set ? ${head attrPath} && hasAttrByPath (tail attrPath) set.${head attrPath});
    getAttrFromPath = attrPath: set:
      attrByPath attrPath (throw "cannot find attribute `${concatStringsSep "." attrPath}'") set;
    setAttrByPath = attrPath: value:
      if attrPath == [ ] then value else { ${head attrPath} = setAttrByPath (tail attrPath) value; };
    recursiveUpdateUntil = pred: lhs: rhs:
      let f = attrPath: builtins.zipAttrsWith (n: values:
        let here = attrPath ++ [ n ]; in
        if length values == 1 || pred here (elemAt values 1) (head values) then head values
        else f here values);
      in f [ ] [ rhs lhs ];
    recursiveUpdate = recursiveUpdateUntil (path: lhs: rhs: !(isAttrs lhs && isAttrs rhs));
    isDerivation = value: value.type or null == "derivation";
    getName = x: x.pname or (builtins.parseDrvName x.name).name;
    getOutput = output: pkg: pkg.${output} or pkg;
    getBin = getOutput "bin";
    getExe = x: getExe' x (x.meta.mainProgram or (getName x));
    getExe' = x: y: "${getBin x}/bin/${y}";
    makeSearchPath = subDir: paths: concatStringsSep ":" (map (path: path + "/" + subDir) (filter (x: x != null) paths));
    makeSearchPathOutput = output: subDir: pkgs: makeSearchPath subDir (map (getOutput output) pkgs);
    makeBinPath = makeSearchPathOutput "bin" "bin";
    attrsets = {
      inherit filterAttrs mapAttrs' mapAttrsToList nameValuePair genAttrs attrByPath hasAttrByPath
        getAttrFromPath setAttrByPath recursiveUpdate recursiveUpdateUntil isDerivation catAttrs
        zipAttrsWith;
    };
    optionalAttrs = cond: as: if cond then as else { };

    # -- module system: properties --------------------------------------------------------------
    defaultOverridePriority = 100;
    defaultOrderPriority = 1000;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkOptionDefault = mkOverride 1500;
    mkDefault = mkOverride 1000;
    mkImageMediaOverride = mkOverride 60;
    mkForce = mkOverride 50;
    mkVMOverride = mkOverride 10;
    mkOrder = priority: content: { _type = "order"; inherit priority content; };
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;

    # -- module system: option declarations ---------------------------------------------------
    mkOption = attrs: attrs // { _type = "option"; };
    isOption = x: isAttrs x && x._type or "" == "option";
    mkEnableOption = name: mkOption {
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
      type = types.bool;
    };
    mkPackageOption = pkgs: name: { nullable ? false, default ? name, example ? null, extraDescription ? "", pkgsText ? "pkgs" }:
      let
        namePath = if isList name then name else [ name ];
        defaultPath = if isList default then default else [ default ];
        defaultValue = attrByPath defaultPath (throw "${concatStringsSep "." defaultPath} cannot be found in ${pkgsText}") pkgs;
      in
      mkOption {
        type = if nullable then types.nullOr types.package else types.package;
        description = "The ${concatStringsSep "." namePath} package to use.${optionalString (extraDescription != "") (" " + extraDescription)}";
      } // optionalAttrs (default != null) { default = defaultValue; };
    mkOptionType = { name, description ? null, descriptionClass ? null, check ? (x: true), merge ? mergeDefaultOption, emptyValue ? { }, getSubOptions ? (prefix: { }), nestedTypes ? { }, ... }@attrs:
      attrs // {
        _type = "option-type";
        inherit name check merge emptyValue getSubOptions nestedTypes;
        description = if description == null then name else description;
      };
    options = { inherit mkOption mkEnableOption mkPackageOption isOption showOption showFiles mergeEqualOption mergeOneOption mergeDefaultOption literalExpression literalMD showDefs; };

    # -- module system: how values are shown in errors ----------------------------------------
    showOption = parts:
      let
        escapeOptionPart = part:
          if part == "*" || match "<.+>" part != null || match "[a-zA-Z_][a-zA-Z0-9_'-]*" part != null
          then part
          else escapeNixString part;
      in concatStringsSep "." (map escapeOptionPart parts);
    showFiles = files: concatStringsSep " and " (map (f: "`${f}'") files);
    toPretty = indent: v:
      if isString v then
        (if match ".*\n.*" v != null
         then "''\n${concatMapStrings (l: "${indent}  ${l}\n") (splitString "\n" v)}${indent}''"
         else escapeNixString v)
      else if isInt v || builtins.isFloat v then toString v
      else if isBool v then boolToString v
      else if v == null then "null"
      else if isPath v then toString v
      else if isFunction v then "<function>"
      else if isList v then
        (if v == [ ] then "[ ]" else "[\n${concatMapStrings (x: "${indent}  ${toPretty "${indent}  " x}\n") v}${indent}]")
      else if isDerivation v then "<derivation ${v.name or "?"}>"
      else if isAttrs v then
        (if v == { } then "{ }"
         else "{\n${concatMapStrings (n: "${indent}  ${showOption [ n ]} = ${toPretty "${indent}  " v.${n}};\n") (attrNames v)}${indent}}")
      else "<${typeOf v}>";
    showDefs = defs: concatMapStrings (def:
      let
        pretty = let r = builtins.tryEval (toPretty "" def.value); in if r.success then r.value else "<error>";
        lines = splitString "\n" pretty;
      in
      "\n- In `${def.file}'" + (if length lines > 1 then ":\n" + concatMapStringsSep "\n" (l: "    ${l}") lines else ": ${pretty}")) defs;
    prioritySuggestion = "\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.";

    # -- module system: merge functions -------------------------------------------------------
    mergeDefaultOption = loc: defs:
      let list = map (d: d.value) defs; in
      if length list == 1 then head list
      else if all isFunction list then x: mergeDefaultOption loc (map (f: f x) list)
      else if all isList list then concatLists list
      else if all isAttrs list then foldl' (a: b: a // b) { } list
      else if all isBool list then any id list
      else if all isString list then concatStrings list
      else if all isInt list && all (x: x == head list) list then head list
      else throw "Cannot merge definitions of `${showOption loc}'. Definition values:${showDefs defs}";
    mergeOneOption = loc: defs:
      if defs == [ ] then abort "This case should never happen."
      else if length defs != 1 then
        throw "The unique option `${showOption loc}' is defined multiple times. Definition values:${showDefs defs}"
      else (head defs).value;
    mergeEqualOption = loc: defs:
      if defs == [ ] then abort "This case should never happen."
      else if length defs == 1 then (head defs).value
      else (foldl' (first: def:
        if def.value != first.value
        then throw "The option `${showOption loc}' has conflicting definition values:${showDefs [ first def ]}${prioritySuggestion}"
        else first) (head defs) (tail defs)).value;

    # -- module system: discharging properties ------------------------------------------------
    pushDownProperties = cfg:
      if cfg._type or "" == "merge" then concatMap pushDownProperties cfg.contents
      else if cfg._type or "" == "if" then map (mapAttrs (n: v: mkIf cfg.condition v)) (pushDownProperties cfg.content)
      else if cfg._type or "" == "override" then map (mapAttrs (n: v: mkOverride cfg.priority v)) (pushDownProperties cfg.content)
      else [ cfg ];
    dischargeProperties = def:
      if def._type or "" == "merge" then concatMap dischargeProperties def.contents
      else if def._type or "" == "if" then
        if isBool def.condition
        then (if def.condition then dischargeProperties def.content else [ ])
        else throw "‘mkIf’ called with a non-Boolean condition"
      else [ def ];
    filterOverrides' = defs:
      let
        getPrio = def: if def.value._type or "" == "override" then def.value.priority else defaultOverridePriority;
        highestPrio = foldl' (prio: def: min (getPrio def) prio) 9999 defs;
        strip = def: if def.value._type or "" == "override" then def // { value = def.value.content; } else def;
      in { inherit highestPrio; values = concatMap (def: if getPrio def == highestPrio then [ (strip def) ] else [ ]) defs; };
    filterOverrides = defs: (filterOverrides' defs).values;
    sortProperties = defs:
      let
        strip = def: if def.value._type or "" == "order" then def // { value = def.value.content; inherit (def.value) priority; } else def;
        compare = a: b: (a.priority or defaultOrderPriority) < (b.priority or defaultOrderPriority);
      in sort compare (map strip defs);

    mergeDefinitions = loc: type: defs: rec {
      defsFinal' =
        let
          discharged = concatMap (m: map (value: { inherit (m) file; inherit value; })
            (builtins.addErrorContext "while evaluating definitions from `${m.file}':" (dischargeProperties m.value))) defs;
          filtered = filterOverrides' discharged;
          # An override may wrap a conditional (`mkDefault (mkIf c v)`): discharge what it wrapped.
          undressed = concatMap (d: map (value: { inherit (d) file; inherit value; }) (dischargeProperties d.value)) filtered.values;
        in {
          values = if any (d: d.value._type or "" == "order") undressed then sortProperties undressed else undressed;
          inherit (filtered) highestPrio;
        };
      defsFinal = defsFinal'.values;
      isDefined = defsFinal != [ ];
      mergedValue =
        if isDefined then
          (let invalid = filter (def: !type.check def.value) defsFinal; in
           if invalid == [ ] then type.merge loc defsFinal
           else throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs [ (head invalid) ]}")
        else throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option.";
      optionalValue = if isDefined then { value = mergedValue; } else { };
    };

    # -- module system: evaluation --------------------------------------------------------------
    # The value an option takes from its declaration and its definitions.
    evalOptionValue = loc: opt: defs:
      let
        defs' = (optional (opt ? default) { file = head (opt.declarations or [ "<unknown-file>" ]); value = mkOptionDefault opt.default; }) ++ defs;
        res =
          if opt.readOnly or false && length defs' > 1
          then throw "The option `${showOption loc}' is read-only, but it's set multiple times. Definition values:${showDefs defs'}"
          else mergeDefinitions loc opt.type defs';
        value = if opt ? apply then opt.apply res.mergedValue else res.mergedValue;
      in
      opt // {
        inherit value loc;
        inherit (res) isDefined;
        definitions = map (def: def.value) res.defsFinal;
        files = map (def: def.file) res.defsFinal;
        highestPrio = res.defsFinal'.highestPrio;
        definitionsWithLocations = res.defsFinal;
      };

    # Walk every leaf of a merged value and force it, so a type error in a definition is reported
    # even when nothing else reads the option. Types holding submodules re-check each submodule's
    # own definitions instead (`forceDefined`), since a submodule's unset options have no value.
    forceDefinedValue = v:
      if isAttrs v then (isDerivation v || all forceDefinedValue (attrValues v))
      else if isList v then all forceDefinedValue v
      else seq v true;
    forceDefinedDefs = loc: type: defs:
      if type ? forceDefined then type.forceDefined loc defs else forceDefinedValue (type.merge loc defs);

    moduleStructuredKeys = [ "_class" "_file" "key" "disabledModules" "imports" "options" "config" "meta" "freeformType" ];

    evalModules = { modules, prefix ? [ ], specialArgs ? { } }:
      let
        internalModule = {
          _file = "lib/modules.nix";
          key = "lib/modules.nix";
          options._module.args = mkOption { type = types.lazyAttrsOf types.raw; default = { }; description = "Additional arguments passed to each module."; };
          options._module.check = mkOption { type = types.bool; default = true; description = "Whether to check whether all option definitions have matching declarations."; };
        };
        baseArgs = { inherit lib options; config = internalConfig; } // specialArgs;
        applyModuleArgs = f:
          let extraArgs = mapAttrs (name: _: specialArgs.${name} or baseArgs.${name} or internalConfig._module.args.${name}) (functionArgs f);
          in f (baseArgs // extraArgs);

        loadModule = { parentKey, parentFile, n, m }:
          let
            fromPath = isPath m || isString m;
            key = if fromPath then toString m else if isAttrs m && m ? key then toString m.key else "${parentKey}:anon-${toString n}";
            file = if fromPath then toString m else parentFile;
            raw = if fromPath then import m else m;
            applied = if isFunction raw then applyModuleArgs raw else raw;
            module = unifyModule key (if isAttrs applied && applied ? _file then toString applied._file else file) applied;
          in { inherit key module; };

        unifyModule = key: file: m:
          if !isAttrs m then throw "Module `${file}' is not a module: it is a ${typeOf m}, where an attribute set or a function returning one was expected."
          else if m ? config || m ? options then
            (let bad = removeAttrs m moduleStructuredKeys; in
             if bad != { } then
               throw "Module `${file}' has an unsupported attribute `${head (attrNames bad)}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top level instead, or move all of them (namely: ${toString (attrNames bad)}) into the explicit `config' attribute."
             else {
               inherit key file;
               imports = m.imports or [ ];
               options = m.options or { };
               config = m.config or { };
               freeformType = m.freeformType or null;
             })
          else {
            inherit key file;
            imports = m.imports or [ ];
            options = { };
            config = removeAttrs m moduleStructuredKeys;
            freeformType = m.freeformType or null;
          };

        collected = map (entry: entry.module) (builtins.genericClosure {
          startSet = imap1 (n: m: loadModule { parentKey = "root"; parentFile = "<unknown-file>"; inherit n m; }) ([ internalModule ] ++ modules);
          operator = entry: imap1 (n: m: loadModule { parentKey = entry.key; parentFile = entry.module.file; inherit n m; }) entry.module.imports;
        });

        declarations = foldl' (acc: m: mergeDeclarationTrees m.file prefix acc m.options) { } collected;
        freeformTypes = filter (t: t != null) (map (m: m.freeformType) collected);
        freeformType = if freeformTypes == [ ] then null else head freeformTypes;

        merged = evalTree prefix declarations (map (m: { inherit (m) file; value = m.config; }) collected) freeformType;
        internalConfig = merged.config;
        options = merged.options;

        checkUnmatched =
          if merged.unmatched != [ ] && internalConfig._module.check then
            let first = head merged.unmatched; in
            throw "The option `${showOption first.loc}' does not exist. Definition values:${showDefs [ first ]}"
          else true;
        checked = seq checkUnmatched;
      in {
        inherit options;
        config = checked (removeAttrs internalConfig [ "_module" ]);
        forceDefined = checked merged.forceDefined;
        inherit (internalConfig) _module;
      };

    # Merge the `options` tree of one module into the declarations gathered so far.
    mergeDeclarationTrees = file: loc: acc: tree:
      if !isAttrs tree then throw "The option declarations of `${file}' at `${showOption loc}' are not an attribute set."
      else acc // mapAttrs (name: decl:
        let
          loc' = loc ++ [ name ];
          annotated = decl // { declarations = [ file ]; type = decl.type or types.unspecified; };
        in
        if !(acc ? ${name}) then
          (if isOption decl then annotated else mergeDeclarationTrees file loc' { } decl)
        else if isOption acc.${name} && isOption decl then mergeOptionDeclarations loc' acc.${name} annotated
        else if isOption acc.${name} || isOption decl then
          throw "The option `${showOption loc'}' in `${file}' is a prefix of options in `${head (acc.${name}.declarations or [ "<unknown-file>" ])}'."
        else mergeDeclarationTrees file loc' acc.${name} decl) tree;

    # A second declaration of an option may only extend a submodule type, as in NixOS.
    mergeOptionDeclarations = loc: first: second:
      let merged = first.type.typeMerge or (_: null) second.type; in
      if merged == null || second ? default && first ? default then
        throw "The option `${showOption loc}' in `${head second.declarations}' is already declared in ${showFiles first.declarations}."
      else first // removeAttrs second [ "type" "declarations" ] // { type = merged; declarations = first.declarations ++ second.declarations; };

    # Merge definitions (`defs`: attribute sets of definitions at `loc`) against declarations.
    evalTree = loc: decls: defs: freeformType:
      let
        pushed = concatMap (def: map (value: { inherit (def) file; inherit value; }) (pushDownProperties def.value)) defs;
        attrDefs = map (def:
          if isAttrs def.value && def.value._type or "" == "" then def
          else throw "A definition for option `${showOption loc}' is not of type `attribute set of options'. Definition values:${showDefs [ def ]}") pushed;
        names = attrNames (listToAttrs (map (n: nameValuePair n null) (attrNames decls ++ concatMap (def: attrNames def.value) attrDefs)));
        defsFor = name: concatMap (def: if def.value ? ${name} then [ { inherit (def) file; value = def.value.${name}; } ] else [ ]) attrDefs;
        node = name:
          let loc' = loc ++ [ name ]; here = defsFor name; in
          if decls ? ${name} then
            (if isOption decls.${name}
             then { kind = "option"; option = evalOptionValue loc' decls.${name} here; userDefined = here != [ ]; }
             else { kind = "tree"; sub = evalTree loc' decls.${name} here null; })
          else if freeformType != null then
            { kind = "option"; option = evalOptionValue loc' { type = freeformType.nestedTypes.elemType; declarations = [ ]; } here; userDefined = true; }
          else { kind = "unmatched"; defs = here; };
        nodes = genAttrs names node;
        declared = filterAttrs (n: v: v.kind != "unmatched") nodes;
      in {
        config = mapAttrs (n: v: if v.kind == "option" then v.option.value else v.sub.config) declared;
        options = mapAttrs (n: v: if v.kind == "option" then v.option else v.sub.options) declared;
        unmatched = concatLists (mapAttrsToList (n: v:
          if v.kind == "unmatched" then map (def: def // { loc = loc ++ [ n ]; }) v.defs
          else if v.kind == "tree" then v.sub.unmatched
          else [ ]) nodes);
        forceDefined = all (v:
          if v.kind == "option" then (!v.userDefined || seq v.option.value (forceDefinedDefs v.option.loc v.option.type v.option.definitionsWithLocations))
          else v.sub.forceDefined) (attrValues declared);
      };

    modules = {
      inherit mkIf mkMerge mkOverride mkDefault mkForce mkOptionDefault mkBefore mkAfter mkOrder
        evalModules mergeDefinitions pushDownProperties dischargeProperties filterOverrides
        sortProperties defaultOverridePriority defaultOrderPriority mkImageMediaOverride mkVMOverride;
    };

    # -- types ----------------------------------------------------------------------------------
    types = rec {
      isType = type: x: (x._type or "") == type;
      inherit mkOptionType;

      raw = mkOptionType { name = "raw"; description = "raw value"; check = x: true; merge = mergeOneOption; };
      anything = mkOptionType {
        name = "anything";
        description = "anything";
        check = x: true;
        merge = loc: defs:
          let
            getType = value: if isAttrs value && isStringLike value then "stringCoercibleSet" else typeOf value;
            commonType = foldl' (type: def:
              if getType def.value == type then type
              else throw "The option `${showOption loc}' has conflicting option types in ${showFiles (map (d: d.file) defs)}") (getType (head defs).value) defs;
            mergeFunction = {
              set = (attrsOf anything).merge;
              stringCoercibleSet = mergeOneOption;
              lambda = loc: defs: arg: anything.merge (loc ++ [ "<function body>" ]) (map (def: { inherit (def) file; value = def.value arg; }) defs);
            }.${commonType} or mergeEqualOption;
          in mergeFunction loc defs;
      };
      unspecified = mkOptionType { name = "unspecified"; description = "unspecified value"; };
      bool = mkOptionType { name = "bool"; description = "boolean"; check = isBool; merge = mergeEqualOption; };
      int = mkOptionType { name = "int"; description = "signed integer"; check = isInt; merge = mergeEqualOption; };
      float = mkOptionType { name = "float"; description = "floating point number"; check = builtins.isFloat; merge = mergeEqualOption; };
      number = either int float;
      ints = rec {
        betweenDesc = lowest: highest: "${toString lowest} and ${toString highest} (both inclusive)";
        between = lowest: highest: addCheck int (x: x >= lowest && x <= highest) // {
          name = "intBetween";
          description = "integer between ${betweenDesc lowest highest}";
        };
        unsign = bit: range: addCheck int (x: x >= 0 && x <= range) // {
          name = "unsignedInt${toString bit}";
          description = "${toString bit} bit unsigned integer; between ${betweenDesc 0 range}";
        };
        sign = bit: range: addCheck int (x: x >= 0 - range && x <= range - 1) // {
          name = "signedInt${toString bit}";
          description = "${toString bit} bit signed integer; between ${betweenDesc (0 - range) (range - 1)}";
        };
        unsigned = addCheck int (x: x >= 0) // { name = "unsignedInt"; description = "unsigned integer, meaning >=0"; };
        positive = addCheck int (x: x > 0) // { name = "positiveInt"; description = "positive integer, meaning >0"; };
        u8 = unsign 8 255;
        u16 = unsign 16 65535;
        u32 = unsign 32 4294967295;
        s8 = sign 8 128;
        s16 = sign 16 32768;
        s32 = sign 32 2147483648;
      };
      port = ints.u16;
      str = mkOptionType { name = "str"; description = "string"; check = isString; merge = mergeEqualOption; };
      nonEmptyStr = strMatching "(.|\n)*[^[:space:]](.|\n)*" // { name = "nonEmptyStr"; description = "non-empty string"; };
      singleLineStr = strMatching "[^\n]*\n?" // { name = "singleLineStr"; description = "(optionally newline-terminated) single-line string"; };
      strMatching = pattern: mkOptionType {
        name = "strMatching ${escapeNixString pattern}";
        description = "string matching the pattern ${pattern}";
        check = x: isString x && match pattern x != null;
        merge = mergeEqualOption;
      };
      separatedString = sep: mkOptionType {
        name = "separatedString";
        description = if sep == "" then "Concatenated string" else "strings concatenated with ${escapeNixString sep}";
        check = isString;
        merge = loc: defs: concatStringsSep sep (map (d: d.value) defs);
      };
      lines = separatedString "\n";
      commas = separatedString ",";
      envVar = separatedString ":";
      string = separatedString "" // { name = "string"; };
      passwdEntry = entryType: addCheck entryType (str: !(hasInfix ":" str || hasInfix "\n" str)) // {
        name = "passwdEntry ${entryType.name}";
        description = "${entryType.description}, not containing newlines or colons";
      };
      attrs = mkOptionType {
        name = "attrs";
        description = "attribute set";
        check = isAttrs;
        merge = loc: foldl' (res: def: res // def.value) { };
      };
      package = mkOptionType {
        name = "package";
        description = "package";
        check = x: isDerivation x || isStorePath x;
        merge = mergeOneOption;
      };
      shellPackage = package // { name = "shellPackage"; description = "shell package"; check = x: isDerivation x && x ? shellPath; };
      path = mkOptionType {
        name = "path";
        description = "absolute path";
        check = x: isStringLike x && substring 0 1 (toString x) == "/";
        merge = mergeEqualOption;
      };
      pathInStore = addCheck path isStorePath // { name = "pathInStore"; description = "path in the Nix store"; };
      listOf = elemType: mkOptionType {
        name = "listOf";
        description = "list of ${elemType.description}";
        check = isList;
        merge = loc: defs:
          map (x: x.value) (filter (x: x ? value) (concatLists (imap1 (n: def:
            imap1 (m: def': (mergeDefinitions (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) elemType [ { inherit (def) file; value = def'; } ]).optionalValue)
              def.value) defs)));
        nestedTypes.elemType = elemType;
        forceDefined = loc: defs: all (x: x) (concatLists (imap1 (n: def:
          imap1 (m: def': forceDefinedDefs (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) elemType [ { inherit (def) file; value = def'; } ]) def.value) defs));
      };
      nonEmptyListOf = elemType: addCheck (listOf elemType) (l: l != [ ]) // { description = "non-empty list of ${elemType.description}"; };
      attrsOf = elemType: mkOptionType rec {
        name = "attrsOf";
        description = "attribute set of ${elemType.description}";
        check = isAttrs;
        merge = loc: defs:
          mapAttrs (n: v: v.value) (filterAttrs (n: v: v ? value) (builtins.zipAttrsWith (name: defs': (mergeDefinitions (loc ++ [ name ]) elemType defs').optionalValue)
            (map (def: mapAttrs (n: v: { inherit (def) file; value = v; }) def.value) (pushDefs defs))));
        nestedTypes.elemType = elemType;
        forceDefined = loc: defs: all (x: x) (attrValues (builtins.zipAttrsWith (name: defs':
          let merged = mergeDefinitions (loc ++ [ name ]) elemType defs'; in !merged.isDefined || forceDefinedDefs (loc ++ [ name ]) elemType merged.defsFinal)
          (map (def: mapAttrs (n: v: { inherit (def) file; value = v; }) def.value) (pushDefs defs))));
        typeMerge = other: if other.name or "" == "attrsOf" then (let e = elemType.typeMerge or (_: null) other.nestedTypes.elemType; in if e == null then null else attrsOf e) else null;
      };
      lazyAttrsOf = elemType: mkOptionType rec {
        name = "lazyAttrsOf";
        description = "lazy attribute set of ${elemType.description}";
        check = isAttrs;
        merge = loc: defs:
          builtins.zipAttrsWith (name: defs': let merged = mergeDefinitions (loc ++ [ name ]) elemType defs'; in
            if merged.isDefined then merged.mergedValue else throw "The option `${showOption (loc ++ [ name ])}' is defined with `lib.mkIf false`.")
            (map (def: mapAttrs (n: v: { inherit (def) file; value = v; }) def.value) (pushDefs defs));
        nestedTypes.elemType = elemType;
      };
      # Conditions and overrides on a whole attribute set apply to each of its values.
      pushDefs = defs: concatMap (def: map (value: { inherit (def) file; inherit value; }) (pushDownProperties def.value)) defs;
      nullOr = elemType: mkOptionType rec {
        name = "nullOr";
        description = "null or ${elemType.description}";
        check = x: x == null || elemType.check x;
        merge = loc: defs:
          let nrNulls = length (filter (def: def.value == null) defs); in
          if nrNulls == length defs then null
          else if nrNulls != 0 then throw "The option `${showOption loc}' is defined both null and not null, in ${showFiles (map (d: d.file) defs)}."
          else elemType.merge loc defs;
        nestedTypes.elemType = elemType;
        forceDefined = loc: defs: all (def: def.value == null) defs || forceDefinedDefs loc elemType defs;
        typeMerge = other: if other.name or "" == "nullOr" then (let e = elemType.typeMerge or (_: null) other.nestedTypes.elemType; in if e == null then null else nullOr e) else null;
      };
      uniq = elemType: elemType // { merge = mergeOneOption; };
      unique = { message }: elemType: elemType // {
        merge = loc: defs: if length defs > 1 then throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.\n${message}\nDefinition values:${showDefs defs}" else elemType.merge loc defs;
      };
      enum = values:
        let
          show = v: if isString v then ''"${v}"'' else if isInt v then toString v else if isBool v then boolToString v else ''<${typeOf v}>'';
        in mkOptionType {
          name = "enum";
          description =
            if values == [ ] then "impossible (empty enum)"
            else if length values == 1 then "value ${show (head values)} (singular enum)"
            else "one of ${concatMapStringsSep ", " show values}";
          check = flip elem values;
          merge = mergeEqualOption;
        };
      either = t1: t2: mkOptionType {
        name = "either";
        description = "${t1.description} or ${t2.description}";
        check = x: t1.check x || t2.check x;
        merge = loc: defs:
          let defList = map (d: d.value) defs; in
          if all (x: t1.check x) defList then t1.merge loc defs
          else if all (x: t2.check x) defList then t2.merge loc defs
          else mergeOneOption loc defs;
        nestedTypes = { left = t1; right = t2; };
        forceDefined = loc: defs:
          let defList = map (d: d.value) defs; in
          if all (x: t1.check x) defList then forceDefinedDefs loc t1 defs
          else if all (x: t2.check x) defList then forceDefinedDefs loc t2 defs
          else forceDefinedValue (mergeOneOption loc defs);
      };
      oneOf = ts: if ts == [ ] then throw "types.oneOf needs to get at least one type in its argument" else foldl' either (head ts) (tail ts);
      coercedTo = coercedType: coerceFunc: finalType: mkOptionType {
        name = "coercedTo";
        description = "${finalType.description} or ${coercedType.description} convertible to it";
        check = x: (coercedType.check x && finalType.check (coerceFunc x)) || finalType.check x;
        merge = loc: defs: finalType.merge loc (map (def: def // { value = if !finalType.check def.value && coercedType.check def.value then coerceFunc def.value else def.value; }) defs);
      };
      functionTo = elemType: mkOptionType {
        name = "functionTo";
        description = "function that evaluates to a(n) ${elemType.description}";
        check = isFunction;
        merge = loc: defs: fnArgs: (mergeDefinitions (loc ++ [ "<function body>" ]) elemType (map (fn: { inherit (fn) file; value = fn.value fnArgs; }) defs)).mergedValue;
      };
      addCheck = elemType: check: elemType // { check = x: elemType.check x && check x; };
      submoduleWith = { modules, specialArgs ? { }, shorthandOnlyDefinesConfig ? false, description ? null }:
        let
          evaluate = loc: defs: evalModules {
            modules = [ { _module.args.name = mkOptionDefault (last loc); } ] ++ modules ++ map (def:
              if isAttrs def.value && shorthandOnlyDefinesConfig
              then { _file = def.file; config = def.value; }
              else { _file = def.file; imports = [ def.value ]; }) defs;
            prefix = loc;
            inherit specialArgs;
          };
        in
        mkOptionType {
          name = "submodule";
          description = if description != null then description else "submodule";
          check = x: isAttrs x || isFunction x || isPath x;
          merge = loc: defs: (evaluate loc defs).config;
          forceDefined = loc: defs: (evaluate loc defs).forceDefined;
          submoduleModules = modules;
          typeMerge = other:
            if other.name or "" == "submodule" then submoduleWith { modules = modules ++ other.submoduleModules; inherit specialArgs shorthandOnlyDefinesConfig description; }
            else null;
        };
      submodule = modules: submoduleWith { shorthandOnlyDefinesConfig = true; modules = toList modules; };
      deferredModule = mkOptionType {
        name = "deferredModule";
        description = "module";
        check = x: isAttrs x || isFunction x || isPath x;
        merge = loc: defs: { imports = map (def: { _file = def.file; imports = [ def.value ]; }) defs; };
      };
    };
  };
in
lib
