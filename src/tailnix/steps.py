"""The names of the deploy's steps: what pyinfra prints for each operation, and the key of its results.

Defined once: the playbook names its operations with these, `tailnix deploy` reads pyinfra's results by
them, and the tests assert with them.
"""

from __future__ import annotations

PREFLIGHT = "Check the host is NixOS and can decrypt the secrets"
SECRETS_FILE = "Place the encrypted secrets file"
MODULE_FILE = "Place the Tailscale module"
IMPORT = "Import the module in configuration.nix"
GIT_INDEX = "Let a git flake see the new files"
SWITCH = "nixos-rebuild switch"
REAUTHENTICATE = "re-authenticate"
"""A Running node logs in again with other tags or another login server; `--dry` shows it with the change
(`re-authenticate: tags tag:server -> tag:web`)."""
RETAG = "retag on headscale"
"""`tailnix deploy` sets a Running node's tags on its headscale server before the deploy (tailnix.retag);
`--dry` shows it (`retag on headscale: tags none -> tag:web (...)`)."""
DRIFT = "drift"
"""Not an operation: what the plan says of a Running node's prefs that differ from its settings
(`drift: ExitNodeIP 100.64.0.9 (set by hand) would be cleared by the deploy`)."""
VERIFY = "Verify Tailscale is Running"
CONVERGED = "Check the host and that Tailscale is Running"
"""The one operation a host that needs no change gets: the checks of PREFLIGHT, then VERIFY."""

PLACING = (SECRETS_FILE, MODULE_FILE, IMPORT)
"""The steps that place files on the host."""
FINAL = (VERIFY, CONVERGED)
"""A host's last step: the verification after changes, or the one check of a host that needed none."""
SLOW = (PREFLIGHT, SWITCH, VERIFY)
"""The steps that wait on the host (its lock, the switch, the join): progress shows when a host starts them."""
