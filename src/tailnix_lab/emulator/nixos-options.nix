# The lab's stand-in for the parts of NixOS a stock configuration.nix / hardware-configuration.nix
# and tailnix use: NixOS's real option names, types and defaults, and the configuration the real
# modules derive from them (the tailscaled units, the default unit PATH, the root user).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge mkDefault mkAfter types;

  option = type: default: mkOption { inherit type default; };
  bool = default: option types.bool default;
  strList = option (types.listOf types.str) [ ];

  # As nixos/lib/systemd-unit-options.nix `unitOption`: repeatable options are lists, others must agree,
  # and a mix of both is an error.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    description = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs; in
      if lib.isList (lib.head defs').value
      then lib.concatMap (def:
        if builtins.typeOf def.value == "list" then def.value
        else throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs defs'}") defs'
      else lib.mergeEqualOption loc defs';
  };

  # As nixos/lib/systemd-lib.nix: `assertValueOneOf` and `checkUnitConfig` (the errors go to the
  # trace, the type check fails), and `checkService` of systemd-unit-options.nix.
  assertValueOneOf = name: values: group: attr:
    lib.optional (attr ? ${name} && !lib.elem attr.${name} values)
      "Systemd ${group} field `${name}' cannot have value `${toString attr.${name}}'.";
  checkUnitConfig = group: checks: attrs:
    let
      defs = lib.mapAttrs (_: v:
        if v._type or "" == "override" || v._type or "" == "if" then v.content else v) attrs;
      errors = lib.concatMap (c: c group defs) checks;
    in
    if errors == [ ] then true else builtins.trace (lib.concatStringsSep "\n" errors) false;
  checkService = checkUnitConfig "Service" [
    (assertValueOneOf "Type" [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ])
    (assertValueOneOf "Restart" [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ])
  ];

  # nixos/lib/systemd-lib.nix `unitNameType`: options that name units take full unit names.
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  unitNameList = option (types.listOf unitNameType) [ ];

  serviceModule = { name, config, ... }: {
    options = {
      enable = bool true;
      overrideStrategy = option (types.enum [ "asDropinIfExists" "asDropin" ]) "asDropinIfExists";
      description = option types.singleLineStr "";
      documentation = strList;
      requires = unitNameList;
      wants = unitNameList;
      upholds = unitNameList;
      after = unitNameList;
      before = unitNameList;
      bindsTo = unitNameList;
      partOf = unitNameList;
      conflicts = unitNameList;
      requisite = unitNameList;
      onFailure = unitNameList;
      onSuccess = unitNameList;
      wantedBy = unitNameList;
      upheldBy = unitNameList;
      requiredBy = unitNameList;
      aliases = unitNameList;
      restartTriggers = option (types.listOf types.unspecified) [ ];
      reloadTriggers = option (types.listOf types.unspecified) [ ];
      unitConfig = option (types.attrsOf unitOption) { };
      startLimitBurst = mkOption { type = types.int; description = "Start limit burst."; };
      startLimitIntervalSec = mkOption { type = types.int; description = "Start limit interval."; };
      environment = option (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
      path = option (types.listOf (types.oneOf [ types.package types.str ])) [ ];
      serviceConfig = option (types.addCheck (types.attrsOf unitOption) checkService) { };
      script = option types.lines "";
      scriptArgs = option types.str "";
      preStart = option types.lines "";
      postStart = option types.lines "";
      reload = option types.lines "";
      preStop = option types.lines "";
      postStop = option types.lines "";
      restartIfChanged = bool true;
      reloadIfChanged = bool false;
      stopIfChanged = bool true;
      startAt = option (types.either types.str (types.listOf types.str)) [ ];
      enableStrictShellChecks = bool false;
      notSocketActivated = bool false;
    };
    # As nixos/lib/systemd-lib.nix: a minimal default PATH for every service.
    config = {
      path = mkAfter [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused pkgs.systemd ];
      environment.PATH = "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}";
    };
  };

  userModule = { name, config, ... }: {
    options = {
      name = option (types.passwdEntry types.str) name;
      description = option (types.passwdEntry types.str) "";
      uid = option (types.nullOr types.int) null;
      isSystemUser = bool false;
      isNormalUser = bool false;
      group = option types.str "";
      extraGroups = strList;
      home = option (types.passwdEntry types.path) (if config.isNormalUser then "/home/${name}" else "/var/empty");
      homeMode = option (types.strMatching "[0-7]{1,5}") (if config.isNormalUser then "700" else "755");
      createHome = bool config.isNormalUser;
      useDefaultShell = bool false;
      shell = option (types.nullOr (types.either types.shellPackage (types.passwdEntry types.path))) pkgs.shadow or null;
      packages = option (types.listOf types.package) [ ];
      hashedPassword = option (types.nullOr (types.passwdEntry types.str)) null;
      hashedPasswordFile = option (types.nullOr types.str) null;
      password = option (types.nullOr types.str) null;
      initialHashedPassword = option (types.nullOr (types.passwdEntry types.str)) null;
      initialPassword = option (types.nullOr types.str) null;
      linger = option (types.nullOr types.bool) null;
      autoSubUidGidRange = bool false;
      openssh.authorizedKeys = {
        keys = option (types.listOf types.singleLineStr) [ ];
        keyFiles = option (types.listOf types.path) [ ];
      };
    };
    config.group = mkIf config.isNormalUser (mkDefault "users");
  };

  groupModule = { name, ... }: {
    options = {
      name = option (types.passwdEntry types.str) name;
      gid = option (types.nullOr types.int) null;
      members = strList;
    };
  };

  fileSystemModule = { name, config, ... }: {
    options = {
      mountPoint = option types.str name;
      device = option (types.nullOr types.nonEmptyStr) null;
      fsType = option types.nonEmptyStr "auto";
      options = option (types.nonEmptyListOf types.nonEmptyStr) [ "defaults" ];
      label = option (types.nullOr types.str) null;
      depends = option (types.listOf types.nonEmptyStr) [ ];
      neededForBoot = bool false;
      noCheck = bool false;
      autoFormat = bool false;
      autoResize = bool false;
    };
  };

  swapModule = { config, ... }: {
    options = {
      device = mkOption { type = types.nonEmptyStr; description = "Path of the device or swap file."; };
      label = option (types.nullOr types.nonEmptyStr) null;
      size = option (types.nullOr types.int) null;
      priority = option (types.nullOr types.int) null;
      discardPolicy = option (types.nullOr (types.enum [ "once" "pages" "both" ])) null;
      randomEncryption.enable = bool false;
      options = option (types.nonEmptyListOf types.nonEmptyStr) [ "defaults" ];
    };
  };

  interfaceModule = { name, ... }: {
    options = {
      name = option types.str name;
      useDHCP = option (types.nullOr types.bool) null;
      wakeOnLan.enable = bool false;
      ipv4.addresses = option (types.listOf (types.submodule {
        options = { address = mkOption { type = types.str; description = "IPv4 address."; }; prefixLength = mkOption { type = types.ints.between 0 32; description = "Prefix length."; }; };
      })) [ ];
      ipv6.addresses = option (types.listOf (types.submodule {
        options = { address = mkOption { type = types.str; description = "IPv6 address."; }; prefixLength = mkOption { type = types.ints.between 0 128; description = "Prefix length."; }; };
      })) [ ];
    };
  };

  luksModule = { name, ... }: {
    options = {
      name = option types.str name;
      device = mkOption { type = types.str; description = "Path of the underlying encrypted block device."; };
      allowDiscards = bool false;
      bypassWorkqueues = bool false;
      keyFile = option (types.nullOr types.str) null;
      preLVM = bool true;
    };
  };

  sshHostKeyType = types.attrsOf types.anything;

  settingsFreeform = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str types.path (types.listOf (types.oneOf [ types.bool types.int types.str types.path ])) ]));

  tailscale = config.services.tailscale;
in
{
  options = {
    assertions = option (types.listOf types.unspecified) [ ];
    warnings = option (types.listOf types.str) [ ];

    boot = {
      loader = {
        timeout = option (types.nullOr types.int) 5;
        systemd-boot = {
          enable = bool false;
          configurationLimit = option (types.nullOr types.int) null;
          consoleMode = option (types.enum [ "0" "1" "2" "5" "auto" "max" "keep" ]) "keep";
          editor = bool true;
        };
        efi = {
          canTouchEfiVariables = bool false;
          efiSysMountPoint = option types.str "/boot";
        };
        grub = {
          enable = bool true;
          device = option types.str "";
          devices = option (types.listOf types.str) [ ];
          efiSupport = bool false;
          efiInstallAsRemovable = bool false;
          useOSProber = bool false;
          configurationLimit = option types.int 100;
        };
      };
      initrd = {
        availableKernelModules = strList;
        kernelModules = strList;
        luks.devices = option (types.attrsOf (types.submodule luksModule)) { };
        systemd.enable = bool false;
        secrets = option (types.attrsOf (types.nullOr types.path)) { };
      };
      kernelModules = strList;
      extraModulePackages = option (types.listOf types.package) [ ];
      blacklistedKernelModules = strList;
      kernelParams = option (types.listOf (types.strMatching ''([^"[:space:]]|"[^"]*")+'')) [ ];
      kernelPackages = option types.raw pkgs.linuxPackages;
      kernel.sysctl = option (types.attrsOf (types.nullOr (types.oneOf [ types.bool types.str types.int ]))) { };
      supportedFilesystems = option (types.either (types.listOf types.str) (types.attrsOf types.bool)) [ ];
      tmp.cleanOnBoot = bool false;
      tmp.useTmpfs = bool false;
    };

    fileSystems = option (types.attrsOf (types.submodule fileSystemModule)) { };
    swapDevices = option (types.listOf (types.submodule swapModule)) [ ];

    hardware = {
      cpu.intel.updateMicrocode = bool false;
      cpu.amd.updateMicrocode = bool false;
      enableRedistributableFirmware = bool false;
      enableAllFirmware = bool false;
      graphics.enable = bool false;
      bluetooth.enable = bool false;
    };

    nixpkgs = {
      hostPlatform = mkOption { type = types.either types.str types.attrs; description = "The platform NixOS runs on."; };
      config = option types.attrs { };
      overlays = option (types.listOf types.unspecified) [ ];
    };

    networking = {
      hostName = option (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
      hostId = option (types.nullOr types.str) null;
      domain = option (types.nullOr (types.strMatching "^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?(\\.[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?)*$")) null;
      useDHCP = bool true;
      useNetworkd = bool false;
      interfaces = option (types.attrsOf (types.submodule interfaceModule)) { };
      defaultGateway = option (types.nullOr (types.coercedTo types.str (address: { inherit address; }) types.attrs)) null;
      nameservers = strList;
      extraHosts = option types.lines "";
      hosts = option (types.attrsOf (types.listOf types.str)) { };
      networkmanager.enable = bool false;
      wireless.enable = bool false;
      proxy.default = option (types.nullOr types.str) null;
      proxy.noProxy = option (types.nullOr types.str) null;
      nftables.enable = bool false;
      dhcpcd.denyInterfaces = option (types.nullOr (types.listOf types.str)) null;
      resolvconf.enable = bool true;
      resolvconf.package = option types.package pkgs.openresolv;
      firewall = {
        enable = bool true;
        allowPing = bool true;
        allowedTCPPorts = option (types.listOf types.port) [ ];
        allowedUDPPorts = option (types.listOf types.port) [ ];
        allowedTCPPortRanges = option (types.listOf (types.attrsOf types.port)) [ ];
        allowedUDPPortRanges = option (types.listOf (types.attrsOf types.port)) [ ];
        trustedInterfaces = strList;
        checkReversePath = option (types.either types.bool (types.enum [ "strict" "loose" ])) true;
        logRefusedConnections = bool true;
      };
    };

    time.timeZone = option (types.nullOr (types.addCheck types.str (s: !(lib.hasInfix " " s)) // { description = "null or string without spaces"; })) null;
    time.hardwareClockInLocalTime = bool false;
    i18n.defaultLocale = option types.str "en_US.UTF-8";
    i18n.extraLocaleSettings = option (types.attrsOf types.str) { };
    console = {
      font = option (types.nullOr (types.either types.str types.path)) null;
      keyMap = option (types.either types.str types.path) "us";
      useXkbConfig = bool false;
    };

    users = {
      mutableUsers = bool true;
      defaultUserShell = option (types.either types.path types.shellPackage) "/run/current-system/sw/bin/bash";
      users = option (types.attrsOf (types.submodule userModule)) { };
      groups = option (types.attrsOf (types.submodule groupModule)) { };
    };

    security = {
      sudo.enable = bool true;
      sudo.wheelNeedsPassword = bool true;
      wrapperDir = option types.path "/run/wrappers/bin";
      rtkit.enable = bool false;
    };

    environment = {
      systemPackages = option (types.listOf types.package) [ ];
      variables = option (types.attrsOf (types.oneOf [ (types.listOf (types.oneOf [ types.int types.str types.path ])) types.int types.str types.path ])) { };
      sessionVariables = option (types.attrsOf (types.either types.str types.path)) { };
      shellAliases = option (types.attrsOf (types.nullOr (types.either types.str types.path))) { };
      etc = option (types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          target = option types.str name;
          text = option (types.nullOr types.lines) null;
          source = mkOption { type = types.path; description = "Path of the source file."; };
          mode = option types.str "symlink";
          user = option types.str "+0";
          group = option types.str "+0";
          enable = bool true;
        };
      }))) { };
    };

    programs = {
      bash.completion.enable = bool true;
      zsh.enable = bool false;
      fish.enable = bool false;
      git.enable = bool false;
      vim.enable = bool false;
      vim.defaultEditor = bool false;
      neovim.enable = bool false;
      neovim.defaultEditor = bool false;
      firefox.enable = bool false;
      mtr.enable = bool false;
      gnupg.agent.enable = bool false;
      gnupg.agent.enableSSHSupport = bool false;
      ssh.startAgent = bool false;
    };

    services = {
      openssh = {
        enable = bool false;
        startWhenNeeded = bool false;
        openFirewall = bool true;
        ports = option (types.listOf types.port) [ 22 ];
        listenAddresses = option (types.listOf (types.submodule {
          options = { addr = option (types.nullOr types.str) null; port = option (types.nullOr types.port) null; };
        })) [ ];
        hostKeys = option (types.listOf sshHostKeyType) [
          { type = "rsa"; bits = 4096; path = "/etc/ssh/ssh_host_rsa_key"; }
          { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; }
        ];
        extraConfig = option types.lines "";
        settings = option (types.submodule {
          freeformType = settingsFreeform;
          options = {
            PermitRootLogin = option (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ]) "prohibit-password";
            PasswordAuthentication = bool true;
            KbdInteractiveAuthentication = bool true;
            X11Forwarding = bool false;
            UseDns = bool false;
            StrictModes = bool true;
            LogLevel = option (types.nullOr (types.enum [ "QUIET" "FATAL" "ERROR" "INFO" "VERBOSE" "DEBUG" "DEBUG1" "DEBUG2" "DEBUG3" ])) "INFO";
            AllowUsers = option (types.nullOr (types.listOf types.str)) null;
            DenyUsers = option (types.nullOr (types.listOf types.str)) null;
            AllowGroups = option (types.nullOr (types.listOf types.str)) null;
            DenyGroups = option (types.nullOr (types.listOf types.str)) null;
          };
        }) { };
      };

      tailscale = {
        enable = mkEnableOption "Tailscale client daemon";
        port = mkOption { type = types.port; default = 41641; description = "The port to listen on for tunnel traffic (0=autoselect)."; };
        interfaceName = mkOption { type = types.str; default = "tailscale0"; description = ''The interface name for tunnel traffic. Use "userspace-networking" (beta) to not use TUN.''; };
        permitCertUid = mkOption { type = types.nullOr types.nonEmptyStr; default = null; description = "Username or user ID of the user allowed to to fetch Tailscale TLS certificates for the node."; };
        disableTaildrop = mkOption { default = false; type = types.bool; description = "Whether to disable the Taildrop feature for sending files between nodes."; };
        disableUpstreamLogging = mkOption { default = false; type = types.bool; description = "Whether to disable Tailscaled from sending debug logging upstream."; };
        package = lib.mkPackageOption pkgs "tailscale" { };
        openFirewall = mkOption { default = false; type = types.bool; description = "Whether to open the firewall for the specified port."; };
        useRoutingFeatures = mkOption {
          type = types.enum [ "none" "client" "server" "both" ];
          default = "none";
          example = "server";
          description = "Enables settings required for Tailscale's routing features like subnet routers and exit nodes.";
        };
        authKeyFile = mkOption { type = types.nullOr types.path; default = null; example = "/run/secrets/tailscale_key"; description = "A file containing the auth key. Tailscale will be automatically started if provided."; };
        authKeyParameters = mkOption {
          type = types.submodule {
            options = {
              ephemeral = mkOption { type = types.nullOr types.bool; default = null; description = "Whether to register as an ephemeral node."; };
              preauthorized = mkOption { type = types.nullOr types.bool; default = null; description = "Whether to skip manual device approval."; };
              baseURL = mkOption { type = types.nullOr types.str; default = null; description = "Base URL for the Tailscale API."; };
            };
          };
          default = { };
          description = "Extra parameters to pass after the auth key.";
        };
        extraUpFlags = mkOption { type = types.listOf types.str; default = [ ]; example = [ "--ssh" ]; description = "Extra flags to pass to tailscale up. Only applied if services.tailscale.authKeyFile is specified."; };
        extraSetFlags = mkOption { type = types.listOf types.str; default = [ ]; example = [ "--advertise-exit-node" ]; description = "Extra flags to pass to tailscale set."; };
        extraDaemonFlags = mkOption { type = types.listOf types.str; default = [ ]; example = [ "--no-logs-no-support" ]; description = "Extra flags to pass to tailscaled."; };
      };

      qemuGuest.enable = bool false;
      timesyncd.enable = bool true;
      xserver.enable = bool false;
      xserver.xkb.layout = option types.str "us";
      xserver.xkb.variant = option types.str "";
      xserver.xkb.options = option types.commas "terminate:ctrl_alt_bksp";
      displayManager.gdm.enable = bool false;
      desktopManager.gnome.enable = bool false;
      printing.enable = bool false;
      pulseaudio.enable = bool false;
      pipewire = {
        enable = bool false;
        alsa.enable = bool false;
        alsa.support32Bit = bool false;
        pulse.enable = bool false;
      };
      libinput.enable = bool false;
      fstrim.enable = bool false;
    };

    systemd = {
      services = option (types.attrsOf (types.submodule serviceModule)) { };
      packages = option (types.listOf types.package) [ ];
      package = option types.package pkgs.systemd;
      network.enable = bool false;
      network.networks = option (types.attrsOf (types.attrsOf types.anything)) { };
    };

    nix = {
      enable = bool true;
      settings = option (types.submodule {
        freeformType = settingsFreeform;
        options = {
          experimental-features = option (types.listOf types.str) [ ];
          trusted-users = option (types.listOf types.str) [ "root" ];
          allowed-users = option (types.listOf types.str) [ "*" ];
          substituters = option (types.listOf types.str) [ ];
          trusted-public-keys = option (types.listOf types.str) [ ];
          auto-optimise-store = bool false;
          max-jobs = option (types.either types.int (types.enum [ "auto" ])) "auto";
          cores = option types.int 0;
          sandbox = option (types.either types.bool (types.enum [ "relaxed" ])) true;
        };
      }) { };
      gc = {
        automatic = bool false;
        dates = option (types.either types.singleLineStr (types.listOf types.str)) [ "03:15" ];
        options = option types.str "";
      };
      optimise.automatic = bool false;
      extraOptions = option types.lines "";
    };

    documentation.enable = bool true;
    documentation.nixos.enable = bool true;

    system = {
      stateVersion = option types.str "25.11";
      copySystemConfiguration = bool false;
      autoUpgrade = {
        enable = bool false;
        allowReboot = bool false;
        dates = option types.str "04:40";
        flake = option (types.nullOr types.str) null;
      };
      nixos.release = option types.str "25.11";
      # What the system is built into; `toplevel` is what `nixos-rebuild --flake` builds.
      build = option (types.lazyAttrsOf types.unspecified) { };
    };
  };

  config = mkMerge [
    {
      users.users.root = {
        uid = 0;
        description = "System administrator";
        home = "/root";
        group = "root";
      };
      users.groups.root.gid = 0;
      users.groups.users.gid = 100;
      users.groups.wheel.gid = 1;
    }

    # As nixos/modules/services/networking/tailscale.nix.
    (mkIf tailscale.enable {
      environment.systemPackages = [ tailscale.package ];
      systemd.packages = [ tailscale.package ];
      systemd.services.tailscaled = {
        after = mkIf config.networking.networkmanager.enable [ "NetworkManager-wait-online.service" ];
        wantedBy = [ "multi-user.target" ];
        path = [
          (builtins.dirOf config.security.wrapperDir)
          pkgs.procps
          pkgs.getent
          pkgs.kmod
        ] ++ lib.optional config.networking.resolvconf.enable config.networking.resolvconf.package;
        serviceConfig = {
          Environment = [
            "PORT=${toString tailscale.port}"
            ''"FLAGS=--tun ${lib.escapeShellArg tailscale.interfaceName} ${lib.concatStringsSep " " tailscale.extraDaemonFlags}"''
          ]
          ++ lib.optionals (tailscale.permitCertUid != null) [ "TS_PERMIT_CERT_UID=${tailscale.permitCertUid}" ]
          ++ lib.optionals tailscale.disableTaildrop [ "TS_DISABLE_TAILDROP=true" ]
          ++ lib.optionals tailscale.disableUpstreamLogging [ "TS_NO_LOGS_NO_SUPPORT=true" ];
        };
        stopIfChanged = false;
      };

      systemd.services.tailscaled-autoconnect = mkIf (tailscale.authKeyFile != null) {
        after = [ "tailscaled.service" ];
        wants = [ "tailscaled.service" ];
        wantedBy = [ "multi-user.target" ];
        serviceConfig.Type = "notify";
        path = [ tailscale.package pkgs.jq ];
        enableStrictShellChecks = true;
        script =
          let
            paramToString = v: if builtins.isBool v then lib.boolToString v else toString v;
            params = lib.pipe tailscale.authKeyParameters [
              (lib.filterAttrs (_: v: v != null))
              (lib.mapAttrsToList (k: v: "${k}=${paramToString v}"))
              (builtins.concatStringsSep "&")
              (p: if p != "" then "?${p}" else "")
            ];
          in
          ''
            getState() {
              tailscale status --json --peers=false | jq -r '.BackendState'
            }

            lastState=""
            while state="$(getState)"; do
              if [[ "$state" != "$lastState" ]]; then
                case "$state" in
                  NeedsLogin)
                    echo "Server needs authentication, sending auth key"
                    tailscale up --auth-key "$(cat ${tailscale.authKeyFile})${params}" ${lib.escapeShellArgs tailscale.extraUpFlags}
                    ;;
                  Running)
                    echo "Tailscale is running"
                    systemd-notify --ready
                    exit 0
                    ;;
                  *)
                    echo "Waiting for Tailscale State = Running or systemd timeout"
                    ;;
                esac
              fi
              echo "State = $state"
              lastState="$state"
              sleep .5
            done
          '';
      };

      systemd.services.tailscaled-set = mkIf (tailscale.extraSetFlags != [ ]) {
        after = [ "tailscaled.service" ];
        wants = [ "tailscaled.service" ];
        wantedBy = [ "multi-user.target" ];
        serviceConfig.Type = "oneshot";
        script = ''
          ${lib.getExe tailscale.package} set ${lib.escapeShellArgs tailscale.extraSetFlags}
        '';
      };

      boot.kernel.sysctl = mkIf (tailscale.useRoutingFeatures == "server" || tailscale.useRoutingFeatures == "both") {
        "net.ipv4.conf.all.forwarding" = lib.mkOverride 97 true;
        "net.ipv6.conf.all.forwarding" = lib.mkOverride 97 true;
      };
      networking.firewall.allowedUDPPorts = mkIf tailscale.openFirewall [ tailscale.port ];
      networking.firewall.checkReversePath = mkIf (tailscale.useRoutingFeatures == "client" || tailscale.useRoutingFeatures == "both") "loose";
      networking.dhcpcd.denyInterfaces = [ tailscale.interfaceName ];
    })

    (mkIf config.services.openssh.enable {
      networking.firewall.allowedTCPPorts = mkIf config.services.openssh.openFirewall config.services.openssh.ports;
      environment.systemPackages = [ pkgs.openssh ];
    })
  ];
}
