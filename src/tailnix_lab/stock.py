"""The files of a NixOS 25.11 host, as the installer and `nixos-generate-config` write them.

Every lab host starts from these: `/etc/os-release` of the release, `hardware-configuration.nix`
for a QEMU guest, and the stock `configuration.nix` with the three edits an admin makes before a
host can be managed over SSH (host name, OpenSSH, root's authorized key). They use only options
NixOS really has.

This module is also imported inside lab hosts (by the `nixos-version` emulator), so it uses the
standard library only.
"""

from __future__ import annotations

import uuid

NIXOS_RELEASE = "25.11"
NIXOS_CODENAME = "Xantusia"
NIXOS_BUILD_ID = "25.11.20251120.abcdef0"
NIXPKGS_REVISION = "abcdef0123456789abcdef0123456789abcdef01"
"""The nixpkgs commit of the stock system; `NIXOS_BUILD_ID` ends with its first 7 digits."""


def nixos_os_release() -> str:
    """Return `/etc/os-release` as NixOS 25.11 ships it."""
    return f"""\
ANSI_COLOR="0;38;2;126;186;228"
BUG_REPORT_URL="https://github.com/NixOS/nixpkgs/issues"
BUILD_ID="{NIXOS_BUILD_ID}"
CPE_NAME="cpe:/o:nixos:nixos:{NIXOS_RELEASE}"
DEFAULT_HOSTNAME=nixos
DOCUMENTATION_URL="https://nixos.org/learn.html"
HOME_URL="https://nixos.org/"
ID=nixos
ID_LIKE=""
IMAGE_ID=""
IMAGE_VERSION=""
LOGO="nix-snowflake"
NAME=NixOS
PRETTY_NAME="NixOS {NIXOS_RELEASE} ({NIXOS_CODENAME})"
SUPPORT_END="2026-06-30"
SUPPORT_URL="https://nixos.org/community.html"
VENDOR_NAME=NixOS
VENDOR_URL="https://nixos.org/"
VERSION="{NIXOS_RELEASE} ({NIXOS_CODENAME})"
VERSION_CODENAME={NIXOS_CODENAME.lower()}
VERSION_ID="{NIXOS_RELEASE}"
"""


def configuration_nix(hostname: str, admin_public_key: str) -> str:
    """Return the stock `/etc/nixos/configuration.nix`, with host name, OpenSSH and root's key set.

    + hostname: the value of `networking.hostName`
    + admin_public_key: the `ssh-ed25519 AAAA...` line allowed to log in as root
    """
    return f"""\
# Edit this configuration file to define what should be installed on
# your system. Help is available in the configuration.nix(5) man page, on
# https://search.nixos.org/options and in the NixOS manual (`nixos-help`).

{{ config, lib, pkgs, ... }}:

{{
  imports =
    [ # Include the results of the hardware scan.
      ./hardware-configuration.nix
    ];

  # Use the systemd-boot EFI boot loader.
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  networking.hostName = "{hostname}"; # Define your hostname.
  # Pick only one of the below networking options.
  # networking.wireless.enable = true;  # Enables wireless support via wpa_supplicant.
  # networking.networkmanager.enable = true;  # Easiest to use and most distros use this by default.

  # Set your time zone.
  # time.timeZone = "Europe/Amsterdam";

  # Select internationalisation properties.
  # i18n.defaultLocale = "en_US.UTF-8";

  # Define a user account. Don't forget to set a password with ‘passwd’.
  # users.users.alice = {{
  #   isNormalUser = true;
  #   extraGroups = [ "wheel" ]; # Enable ‘sudo’ for the user.
  # }};
  users.users.root.openssh.authorizedKeys.keys = [
    "{admin_public_key}"
  ];

  # List packages installed in system profile.
  # You can use https://search.nixos.org/ to find more packages (and options).
  # environment.systemPackages = with pkgs; [
  #   vim # Do not forget to add an editor to edit configuration.nix! The Nano editor is also installed by default.
  #   wget
  # ];

  # List services that you want to enable:

  # Enable the OpenSSH daemon.
  services.openssh.enable = true;

  # Open ports in the firewall.
  # networking.firewall.allowedTCPPorts = [ ... ];
  # networking.firewall.allowedUDPPorts = [ ... ];
  # Or disable the firewall altogether.
  # networking.firewall.enable = false;

  # This option defines the first version of NixOS you have installed on this particular machine,
  # and is used to maintain compatibility with application data (e.g. databases) created on older NixOS versions.
  #
  # Most users should NEVER change this value after the initial install, for any reason,
  # even if you've upgraded your system to a new NixOS release.
  #
  # This value does NOT affect the Nix configuration of your system, but various other things, e.g.:
  # - the state of package installations and the configuration of some services.
  #
  # For more information, see `man configuration.nix` or https://nixos.org/manual/nixos/stable/options#opt-system.stateVersion .
  system.stateVersion = "{NIXOS_RELEASE}"; # Did you read the comment?

}}
"""  # noqa: E501 (NixOS's own template text)


def hardware_configuration_nix(hostname: str) -> str:
    """Return `hardware-configuration.nix` as `nixos-generate-config` writes it in a QEMU guest.

    The disk UUIDs are derived from the host name, so each host has its own and they stay stable.
    """
    root_uuid = uuid.uuid5(uuid.NAMESPACE_DNS, f"root.{hostname}.tailnix-lab")
    boot_serial = uuid.uuid5(uuid.NAMESPACE_DNS, f"boot.{hostname}.tailnix-lab").hex[:8].upper()
    return f"""\
# Do not modify this file!  It was generated by ‘nixos-generate-config’
# and may be overwritten by future invocations.  Please make changes
# to /etc/nixos/configuration.nix instead.
{{ config, lib, pkgs, modulesPath, ... }}:

{{
  imports =
    [ (modulesPath + "/profiles/qemu-guest.nix")
    ];

  boot.initrd.availableKernelModules = [ "ahci" "xhci_pci" "virtio_pci" "sr_mod" "virtio_blk" ];
  boot.initrd.kernelModules = [ ];
  boot.kernelModules = [ "kvm-intel" ];
  boot.extraModulePackages = [ ];

  fileSystems."/" =
    {{ device = "/dev/disk/by-uuid/{root_uuid}";
      fsType = "ext4";
    }};

  fileSystems."/boot" =
    {{ device = "/dev/disk/by-uuid/{boot_serial[:4]}-{boot_serial[4:]}";
      fsType = "vfat";
      options = [ "fmask=0077" "dmask=0077" ];
    }};

  swapDevices = [ ];

  # Enables DHCP on each ethernet and wireless interface. In case of scripted networking
  # (the default) this is the recommended approach. When using systemd-networkd it's
  # still possible to use this option, but it's recommended to use it in conjunction
  # with explicit per-interface declarations with `networking.interfaces.<interface>.useDHCP`.
  networking.useDHCP = lib.mkDefault true;
  # networking.interfaces.enp1s0.useDHCP = lib.mkDefault true;

  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
}}
"""


FLAKE_STYLES = ("stock", "inline", "sops-nix")
"""The flakes a lab host can have in `/etc/nixos` (see `flake_nix`)."""


def flake_inputs_of(style: str) -> list[str]:
    """The inputs (by name) a flake of this style declares, hence locks."""
    if style not in FLAKE_STYLES:
        raise ValueError(f"unknown flake style {style!r}; the lab has {', '.join(FLAKE_STYLES)}")
    return ["nixpkgs", "sops-nix"] if style == "sops-nix" else ["nixpkgs"]


def flake_nix(hostname: str, style: str = "stock", admin_public_key: str = "") -> str:
    """Return an `/etc/nixos/flake.nix` as a NixOS user writes one for this host.

    + style: `stock`, the usual wrapper of `./configuration.nix`; `inline`, whose modules are
      `./hardware-configuration.nix` and the configuration written inline (configuration.nix is not
      used); `sops-nix`, the stock one with a `sops-nix` input and its `nixosModules.sops`
    + admin_public_key: root's authorized key, for the `inline` style
    """
    flake_inputs_of(style)
    inputs = '  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";\n'
    arguments = "{ self, nixpkgs, ... }"
    modules = "        ./configuration.nix\n"
    if style == "sops-nix":
        inputs += (
            '  inputs.sops-nix.url = "github:Mic92/sops-nix";\n'
            '  inputs.sops-nix.inputs.nixpkgs.follows = "nixpkgs";\n'
        )
        arguments = "{ self, nixpkgs, sops-nix, ... }"
        modules += "        sops-nix.nixosModules.sops\n"
    elif style == "inline":
        modules = (
            "        ./hardware-configuration.nix\n"
            "        ({ config, lib, pkgs, ... }: {\n"
            "          boot.loader.systemd-boot.enable = true;\n"
            "          boot.loader.efi.canTouchEfiVariables = true;\n"
            f'          networking.hostName = "{hostname}";\n'
            "          services.openssh.enable = true;\n"
            f'          users.users.root.openssh.authorizedKeys.keys = [ "{admin_public_key}" ];\n'
            f'          system.stateVersion = "{NIXOS_RELEASE}";\n'
            "        })\n"
        )
    return (
        "{\n"
        f'  description = "NixOS configuration of {hostname}";\n\n'
        f"{inputs}\n"
        f"  outputs = {arguments}: {{\n"
        f"    nixosConfigurations.{hostname} = nixpkgs.lib.nixosSystem {{\n"
        '      system = "x86_64-linux";\n'
        "      modules = [\n"
        f"{modules}"
        "      ];\n"
        "    };\n"
        "  };\n"
        "}\n"
    )
