# The lab's stand-in for `pkgs`: a fixed list of common packages. A lab host has no Nix store
# worth building into, so every package is a derivation-shaped attribute set whose out path is the
# system profile, where activation links the host's real commands.
{ lib }:
let
  # name = { version; mainProgram (when nixpkgs declares one); }
  packages = {
    age = { version = "1.2.1"; mainProgram = "age"; };
    bash = { version = "5.3p3"; mainProgram = "bash"; };
    bashInteractive = { version = "5.3p3"; mainProgram = "bash"; };
    coreutils = { version = "9.8"; };
    curl = { version = "8.16.0"; mainProgram = "curl"; };
    dig = { version = "9.20.15"; mainProgram = "dig"; };
    dnsutils = { version = "9.20.15"; mainProgram = "dig"; };
    e2fsprogs = { version = "1.47.3"; };
    fd = { version = "10.3.0"; mainProgram = "fd"; };
    file = { version = "5.46"; mainProgram = "file"; };
    findutils = { version = "4.10.0"; };
    gawk = { version = "5.3.2"; mainProgram = "awk"; };
    getent = { version = "2.40-66"; mainProgram = "getent"; };
    git = { version = "2.51.2"; mainProgram = "git"; };
    glibc = { version = "2.40-66"; };
    gnugrep = { version = "3.12"; mainProgram = "grep"; };
    gnupg = { version = "2.4.8"; mainProgram = "gpg"; };
    gnused = { version = "4.9"; mainProgram = "sed"; };
    gnutar = { version = "1.35"; mainProgram = "tar"; };
    gzip = { version = "1.14"; mainProgram = "gzip"; };
    htop = { version = "3.4.1"; mainProgram = "htop"; };
    inetutils = { version = "2.6"; };
    iproute2 = { version = "6.17.0"; mainProgram = "ip"; };
    iptables = { version = "1.8.11"; mainProgram = "iptables"; };
    iputils = { version = "20250605"; };
    jq = { version = "1.8.1"; mainProgram = "jq"; };
    kmod = { version = "34.2"; mainProgram = "kmod"; };
    less = { version = "679"; mainProgram = "less"; };
    lsof = { version = "4.99.5"; mainProgram = "lsof"; };
    nano = { version = "8.6"; mainProgram = "nano"; };
    neovim = { version = "0.11.5"; mainProgram = "nvim"; };
    nftables = { version = "1.1.5"; mainProgram = "nft"; };
    nix = { version = "2.31.2"; mainProgram = "nix"; };
    nmap = { version = "7.98"; mainProgram = "nmap"; };
    openresolv = { version = "3.17.0"; mainProgram = "resolvconf"; };
    openssh = { version = "10.2p1"; mainProgram = "ssh"; };
    openssl = { version = "3.6.0"; mainProgram = "openssl"; };
    pciutils = { version = "3.14.0"; mainProgram = "lspci"; };
    procps = { version = "4.0.4"; };
    python3 = { version = "3.13.9"; mainProgram = "python3"; };
    ripgrep = { version = "15.1.0"; mainProgram = "rg"; };
    rsync = { version = "3.4.1"; mainProgram = "rsync"; };
    sops = { version = "3.11.0"; mainProgram = "sops"; };
    ssh-to-age = { version = "1.2.0"; mainProgram = "ssh-to-age"; };
    strace = { version = "6.17"; mainProgram = "strace"; };
    systemd = { version = "258.2"; };
    tailscale = { version = "1.90.6"; mainProgram = "tailscale"; };
    tcpdump = { version = "4.99.5"; mainProgram = "tcpdump"; };
    tmux = { version = "3.5a"; mainProgram = "tmux"; };
    tree = { version = "2.2.1"; mainProgram = "tree"; };
    unzip = { version = "6.0"; mainProgram = "unzip"; };
    usbutils = { version = "018"; mainProgram = "lsusb"; };
    util-linux = { version = "2.41.2"; };
    vim = { version = "9.1.1869"; mainProgram = "vim"; };
    wget = { version = "1.25.0"; mainProgram = "wget"; };
    which = { version = "2.23"; mainProgram = "which"; };
    xz = { version = "5.8.1"; mainProgram = "xz"; };
    zip = { version = "3.0"; mainProgram = "zip"; };
  };
  mkPackage = pname: info: {
    type = "derivation";
    inherit pname;
    inherit (info) version;
    name = "${pname}-${info.version}";
    outPath = "/run/current-system/sw";
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
