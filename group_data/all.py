# Fleet-wide defaults for every host. A group's file (group_data/<group>.py) or a host's own data in
# inventory.py overrides any of them. `tailnix module HOST -i inventory.py` shows what a host gets.

# The sops-encrypted file that holds the auth key (tailnix_secrets_file, by default
# secrets/tailscale.yaml beside the inventory) and the key inside it (tailnix_secret_name, by default
# tailscale_auth_key; its value is `tskey-auth-...` or `TAILSCALE_AUTH_KEY=tskey-auth-...`). Its `sops:`
# block must list every host's age recipient (its SSH host key, converted): see the README.

# "autoconnect": tailnix's own join unit (the key never reaches a command line; settings reach a node
# that is already joined). "native": NixOS's services.tailscale.authKeyFile (needs the bare key).
tailnix_mode = "autoconnect"

# The sops-nix the generated module fetches: tailnix pins one that needs a NixOS release whose nixpkgs has
# Go 1.25 (25.11); `tailnix module HOST` shows it. To move it, set both (see the README, "The sops-nix pin"):
# tailnix_sops_nix_url = "https://github.com/Mic92/sops-nix/archive/<commit>.tar.gz"
# tailnix_sops_nix_sha256 = "<what nix-prefetch-url --unpack <that url> prints>"

# `tailscale up` flags. The original recipe accepts routes from subnet routers; so do we.
tailscale_accept_routes = True
tailscale_ssh = False

# How long the verify step waits for a host to report Running (seconds).
tailnix_verify_timeout = 60
