# The lab's stand-in for sops-nix's `modules/sops`: the same option names, types and defaults, so a
# configuration that imports sops-nix evaluates on a lab host exactly as it would on NixOS. The
# decryption itself (what sops-install-secrets does at activation) is done by the lab's emulated
# activation, which reads `config.sops`.
{ config, lib, pkgs, ... }:
let
  cfg = config.sops;
  users = config.users.users;

  pathNotInStore = lib.mkOptionType {
    name = "pathNotInStore";
    description = "path not in the Nix store";
    descriptionClass = "noun";
    check = x: lib.isStringLike x && !(lib.hasPrefix "/nix/store/" (toString x));
    merge = lib.mergeEqualOption;
  };

  regularSecrets = lib.filterAttrs (_: v: !v.neededForUsers) cfg.secrets;

  secretType = lib.types.submodule ({ config, ... }: {
    config = {
      sopsFile = lib.mkOptionDefault cfg.defaultSopsFile;
      # Reading the file at evaluation time is what makes a missing sopsFile an evaluation error.
      sopsFileHash = lib.mkOptionDefault (
        lib.optionalString cfg.validateSopsFiles "${builtins.hashFile "sha256" config.sopsFile}"
      );
    };
    options = {
      name = lib.mkOption {
        type = lib.types.str;
        default = config._module.args.name;
        description = "Name of the file used in /run/secrets";
      };
      key = lib.mkOption {
        type = lib.types.str;
        default = if cfg.defaultSopsKey != null then cfg.defaultSopsKey else config._module.args.name;
        description = ''Key used to lookup in the sops file. This option is ignored if format is binary. "" means whole file.'';
      };
      path = lib.mkOption {
        type = lib.types.str;
        default =
          if config.neededForUsers
          then "/run/secrets-for-users/${config.name}"
          else "/run/secrets/${config.name}";
        description = "Path where secrets are symlinked to. If the default is kept no symlink is created.";
      };
      format = lib.mkOption {
        type = lib.types.enum [ "yaml" "json" "binary" "dotenv" "ini" ];
        default = cfg.defaultSopsFormat;
        description = "File format used to decrypt the sops secret. Binary files are written to the target file as is.";
      };
      mode = lib.mkOption {
        type = lib.types.str;
        default = "0400";
        description = "Permissions mode of the in octal.";
      };
      owner = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "User of the file. Can only be set if uid is 0.";
      };
      uid = lib.mkOption {
        type = lib.types.nullOr lib.types.int;
        default = 0;
        description = "UID of the file, only applied when owner is null.";
      };
      group = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = if config.owner != null then users.${config.owner}.group else null;
        description = "Group of the file. Can only be set if gid is 0.";
      };
      gid = lib.mkOption {
        type = lib.types.nullOr lib.types.int;
        default = 0;
        description = "GID of the file, only applied when group is null.";
      };
      sopsFile = lib.mkOption {
        type = lib.types.path;
        description = "Sops file the secret is loaded from.";
      };
      sopsFileHash = lib.mkOption {
        type = lib.types.str;
        readOnly = true;
        description = "Hash of the sops file, useful in systemd.services.<name>.restartTriggers.";
      };
      restartUnits = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "sshd.service" ];
        description = "Names of units that should be restarted when this secret changes.";
      };
      reloadUnits = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "sshd.service" ];
        description = "Names of units that should be reloaded when this secret changes.";
      };
      neededForUsers = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Decrypt the secret before users and groups are created, to /run/secrets-for-users.";
      };
    };
  });

  # Host keys deployed by sops itself are skipped, to avoid a catch-22.
  defaultImportKeys = algo:
    if config.services.openssh.enable then
      map (e: e.path) (lib.filter (e: e.type == algo && !(lib.hasPrefix "/run/secrets" e.path)) config.services.openssh.hostKeys)
    else [ ];
in
{
  options.sops = {
    secrets = lib.mkOption {
      type = lib.types.attrsOf secretType;
      default = { };
      description = "Path where the latest secrets are mounted to.";
    };
    defaultSopsFile = lib.mkOption {
      type = lib.types.path;
      description = "Default sops file used for all secrets.";
    };
    defaultSopsFormat = lib.mkOption {
      type = lib.types.str;
      default = "yaml";
      description = "Default sops format used for all secrets.";
    };
    defaultSopsKey = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      description = ''Default key used to lookup in all secrets. "" means whole file.'';
    };
    validateSopsFiles = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Check all sops files at evaluation time. This requires sops files to be added to the nix store.";
    };
    keepGenerations = lib.mkOption {
      type = lib.types.ints.unsigned;
      default = 1;
      description = "Number of secrets generations to keep. Setting this to 0 disables pruning.";
    };
    log = lib.mkOption {
      type = lib.types.listOf (lib.types.enum [ "keyImport" "secretChanges" ]);
      default = [ "keyImport" "secretChanges" ];
      description = "What to log";
    };
    environment = lib.mkOption {
      type = lib.types.attrsOf (lib.types.either lib.types.str lib.types.path);
      default = { };
      description = "Environment variables to set before calling sops-install-secrets.";
    };
    useTmpfs = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Use tmpfs in place of ramfs for secrets storage.";
    };
    age = {
      keyFile = lib.mkOption {
        type = lib.types.nullOr pathNotInStore;
        default = null;
        example = "/var/lib/sops-nix/key.txt";
        description = "Path to age key file used for sops decryption.";
      };
      plugins = lib.mkOption {
        type = lib.types.listOf lib.types.package;
        default = [ ];
        description = "List of plugins to use for sops decryption.";
      };
      generateKey = lib.mkOption {
        type = lib.types.bool;
        default = false;
        description = "Whether or not to generate the age key. If false, the key must already be present at the specified location.";
      };
      sshKeyPaths = lib.mkOption {
        type = lib.types.listOf lib.types.path;
        default = defaultImportKeys "ed25519";
        description = "Paths to ssh keys added as age keys during sops description.";
      };
    };
    gnupg = {
      home = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/root/.gnupg";
        description = "Path to gnupg database directory containing the key for decrypting the sops file.";
      };
      sshKeyPaths = lib.mkOption {
        type = lib.types.listOf lib.types.path;
        default = defaultImportKeys "rsa";
        description = "Path to ssh keys added as GPG keys during sops description.";
      };
    };
  };

  config = lib.mkIf (cfg.secrets != { }) {
    assertions = [
      {
        assertion = cfg.gnupg.home != null || cfg.gnupg.sshKeyPaths != [ ] || cfg.age.keyFile != null || cfg.age.sshKeyPaths != [ ];
        message = "No key source configured for sops. Either set services.openssh.enable or set sops.age.keyFile or sops.gnupg.home";
      }
      {
        assertion = !(cfg.gnupg.home != null && cfg.gnupg.sshKeyPaths != [ ]);
        message = "Exactly one of sops.gnupg.home and sops.gnupg.sshKeyPaths must be set";
      }
    ] ++ lib.optionals cfg.validateSopsFiles (lib.concatLists (lib.mapAttrsToList (name: secret: [
      {
        assertion = secret.uid != null && secret.uid != 0 -> secret.owner == null;
        message = "In ${secret.name} exactly one of sops.owner and sops.uid must be set";
      }
      {
        assertion = secret.gid != null && secret.gid != 0 -> secret.group == null;
        message = "In ${secret.name} exactly one of sops.group and sops.gid must be set";
      }
    ]) cfg.secrets));
  };
}
