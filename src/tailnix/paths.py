"""Where tailnix puts things on a host: one place, so the module, the facts and the operations agree."""

from __future__ import annotations

NIXOS_DIR = "/etc/nixos"
CONFIGURATION_FILE = f"{NIXOS_DIR}/configuration.nix"
MODULE_NAME = "tailscale-autoconnect.nix"
MODULE_FILE = f"{NIXOS_DIR}/{MODULE_NAME}"
MODULE_IMPORT = f"./{MODULE_NAME}"
SECRETS_DIR = f"{NIXOS_DIR}/secrets"
SECRETS_FILE = f"{SECRETS_DIR}/tailscale.yaml"
SECRETS_IMPORT = "./secrets/tailscale.yaml"
HOST_KEY_PUBLIC = "/etc/ssh/ssh_host_ed25519_key.pub"
HOST_KEY_PRIVATE = "/etc/ssh/ssh_host_ed25519_key"

# tailnix's own state on the host: what the last successful switch applied, and the originals of files
# changed by a deploy that has not switched yet (restored if the switch fails).
STATE_DIR = "/var/lib/tailnix"
APPLIED_FILE = f"{STATE_DIR}/applied"
PENDING_DIR = f"{STATE_DIR}/pending"
BACKUP_DIR = f"{STATE_DIR}/backup"
# Held (flock) by the deploy that changes the host, for as long as its SSH connection lives.
LOCK_FILE = f"{STATE_DIR}/lock"
LOCK_HOLDER_FILE = f"{STATE_DIR}/lock.holder"

AUTOCONNECT_UNIT = "tailscale-autoconnect"
NATIVE_AUTOCONNECT_UNIT = "tailscaled-autoconnect"
