"""Put every host of the inventory on the tailnet, and keep it there.

    pyinfra inventory.py deploys/tailscale.py

On each NixOS host: place the encrypted secrets file, place the Tailscale module, import it from
configuration.nix, switch only when something changed (or the last switch failed), then verify.
"""

from pyinfra import host

from tailnix import operations
from tailnix.interrupt import exit_nonzero_on_interrupt
from tailnix.plan import plan_host

exit_nonzero_on_interrupt()  # pyinfra itself exits 0 on Ctrl-C

# Settings and the local secrets file are checked here, for every host, before any host is changed.
plan = plan_host(host.name, host.data.dict())
operations.report_unreachable_hosts()

# A host that cannot be deployed to is refused before any operation (an OperationError, failing this host
# alone): a dry run shows the refusal, not changes, and a real run goes on with the other hosts.
with operations.refused_alone():
    # A host reached as a user with sudo: sudo must work without a password before anything runs through it.
    operations.require_sudo()
    # The host's state is read once, in one round trip. None: pyinfra could not read it, has said why, and
    # counts the host as failed.
    state = operations.host_state(plan.settings.lock_timeout)
    if state is not None:
        operations.require_deployable(state, plan)
        # A host that needs no change gets one operation: the checks and the verification (each operation
        # costs the deployer time for every host of the fleet).
        if operations.changes_needed(state, plan):
            operations.preflight(name="Check the host is NixOS and can decrypt the secrets", plan=plan)
            operations.secrets_file(name="Place the encrypted secrets file", plan=plan)
            operations.module_file(name="Place the Tailscale module", plan=plan)
            operations.configuration_import(name="Import the module in configuration.nix")
            operations.flake_git_index(name="Let a git flake see the new files")
            operations.rebuild(name="nixos-rebuild switch", plan=plan)
            operations.verify(name="Verify Tailscale is Running", plan=plan)
        else:
            operations.check(name="Check the host and that Tailscale is Running", plan=plan)
