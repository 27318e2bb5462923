# Fleet-wide defaults for every host. A group's file (group_data/<group>.py) or a host's own data in
# inventory.py overrides any of them. `tailnix module HOST -i inventory.py` shows what a host gets.

# The sops-encrypted file that holds the auth key, relative to where pyinfra runs: one per host, {host}
# being the inventory name, each encrypted for the admins and that host only (`tailnix bootstrap HOST`
# makes it). A fleet whose hosts share one file names it ("secrets/tailscale.yaml"); see the README.
tailnix_secrets_file = "secrets/hosts/{host}.yaml"
# The key inside that file. Its value is `tskey-auth-...` or the form `TAILSCALE_AUTH_KEY=tskey-auth-...`.
tailnix_secret_name = "tailscale_auth_key"

# "autoconnect": tailnix's own join unit (the key never reaches a command line; settings reach a node
# that is already joined). "native": NixOS's services.tailscale.authKeyFile (needs the bare key).
tailnix_mode = "autoconnect"

# The sops-nix the generated module fetches. This commit needs a NixOS release whose nixpkgs has Go 1.25
# (25.11). To move it: nix-prefetch-url --unpack https://github.com/Mic92/sops-nix/archive/<commit>.tar.gz
tailnix_sops_nix_url = (
    "https://github.com/Mic92/sops-nix/archive/56b24064fdcaedca53553b1a6d607fd23b613a24.tar.gz"
)
tailnix_sops_nix_sha256 = "1f0j45mxb2zv672icpfvi7vnz8l4ccgxlkg79jca8avg00lj9gz3"

# `tailscale up` flags. The original recipe accepts routes from subnet routers; so do we.
tailscale_accept_routes = True
tailscale_ssh = False

# Node keys expire after the tailnet's key expiry (180 days by default) and the node must log in again.
# False disables that for the device through the Tailscale API after the deploy (`tailnix deploy` needs an
# OAuth client with the devices:core scope: $TS_API_CLIENT_ID and $TS_API_CLIENT_SECRET, or --oauth-file).
tailscale_key_expiry = True

# A host reinstalled (or whose /var/lib/tailscale was lost) joins as a new device; while its old device is
# on the tailnet, the new one is named `host-1`. With an OAuth client (devices:core), `tailnix deploy`
# deletes such an offline device of the same name first, for a node that is not logged in.
tailnix_replace_offline_device = True

# How long the verify step waits for a host to report Running (seconds).
tailnix_verify_timeout = 60

# pyinfra's SSH: host keys are checked against known_hosts beside the inventory (commit it: it holds
# public keys only), and a host whose key is not there is refused, never trusted silently.
# `tailnix bootstrap HOST` shows a new host's key fingerprint and records it there once you confirm it.
ssh_known_hosts_file = "known_hosts"
ssh_strict_host_key_checking = "yes"
