"""Put every host of the inventory on the tailnet, and keep it there.

    pyinfra inventory.py deploys/tailscale.py

On each NixOS host: place the encrypted secrets file, place the Tailscale module, import it from
configuration.nix, switch only when something changed (or the last switch failed), then verify. The steps
come with tailnix (tailnix.playbook), so upgrading tailnix upgrades them; operations of your own can follow.
"""

from tailnix.playbook import deploy_tailscale

deploy_tailscale()
