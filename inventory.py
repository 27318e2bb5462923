# The fleet: a pyinfra inventory. Each module-level list is a group; each host is a name, or a
# (name, data) tuple with per-host settings. Group-wide settings go in group_data/<group>.py, fleet-wide
# defaults in group_data/all.py.
#
#   pyinfra inventory.py deploys/tailscale.py          deploy to every host
#   pyinfra inventory.py deploys/tailscale.py --limit routers
#   tailnix module desk -i inventory.py                read the module a host would receive
#
# Every host needs SSH access as root, or as a user with passwordless sudo ("ssh_user": "admin",
# "_sudo": True; a sudo that asks for a password is refused), an ed25519 host key, and its age
# recipient in .sops.yaml (see the README). The names below are examples: replace them.

workstations = [
    # The node's name in the tailnet is the host's own hostname (networking.hostName), not this name,
    # unless tailscale_hostname sets it.
    ("desk", {"ssh_hostname": "desk.lan"}),
    ("laptop", {"ssh_hostname": "192.168.1.20", "ssh_user": "root"}),
]

routers = [
    # A subnet router: makes the home LAN reachable from the tailnet (approve the route in the admin console).
    (
        "gateway",
        {
            "ssh_hostname": "gateway.lan",
            "tailscale_advertise_routes": ["192.168.1.0/24"],
            "tailscale_advertise_tags": ["tag:router"],
            # An exit node too: other devices may send all their traffic through it.
            "tailscale_advertise_exit_node": True,
        },
    ),
]

# More settings a host or group may set (see group_data/all.py for the defaults):
#   tailscale_hostname = "name-in-the-tailnet"
#   tailscale_ssh = True                          Tailscale SSH
#   tailscale_login_server = "https://headscale.example.com"
#   tailscale_extra_up_flags = ["--accept-dns=false"]
#   tailnix_mode = "native"                       NixOS's own services.tailscale.authKeyFile
