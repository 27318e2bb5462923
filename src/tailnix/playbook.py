"""The playbook: put the current host on the tailnet, and keep it there.

A fleet's `deploys/tailscale.py` (the repository's, and the one `tailnix init` writes) calls
`deploy_tailscale()`, so the steps come with the installed tailnix and a fleet repository holds no copy
of them that could fall behind:

    pyinfra inventory.py deploys/tailscale.py

On each NixOS host: place the encrypted secrets file, place the Tailscale module, import it from
configuration.nix, switch only when something changed (or the last switch failed), then verify.
"""

from __future__ import annotations

from pyinfra.context import host

from tailnix import operations
from tailnix.interrupt import exit_nonzero_on_interrupt
from tailnix.plan import plan_host


def deploy_tailscale() -> None:
    """Add the steps that put the current host on the tailnet (pyinfra runs the deploy file per host).

    The operation names are part of the interface: `tailnix deploy` and scripts reading
    `pyinfra --json` find the switch by its name, `nixos-rebuild switch`.
    """
    exit_nonzero_on_interrupt()  # pyinfra itself exits 0 on Ctrl-C

    # Settings and the local secrets file are checked here, for every host, before any host is changed.
    plan = plan_host(host.name, host.data.dict())  # type: ignore[no-untyped-call]
    operations.report_unreachable_hosts()

    # A host reached as a user with sudo: sudo must work without a password before anything runs through it.
    sudo_problem = operations.sudo_problem()

    # The host's state is read once, in one round trip. A host that needs no change gets one operation: the
    # checks and the verification (each operation costs the deployer time for every host of the fleet).
    state = operations.host_state(plan.settings.lock_timeout) if sudo_problem is None else None
    if sudo_problem is not None:
        operations.refuse(name="Check sudo runs without a password", problem=sudo_problem)
    elif state is None:
        pass  # pyinfra could not read it, has said why, and counts the host as failed
    elif operations.changes_needed(state, plan):
        operations.preflight(name="Check the host is NixOS and can decrypt the secrets", plan=plan)
        operations.secrets_file(name="Place the encrypted secrets file", plan=plan)
        operations.module_file(name="Place the Tailscale module", plan=plan)
        operations.configuration_import(name="Import the module in configuration.nix")
        operations.flake_git_index(name="Let a git flake see the new files")
        operations.rebuild(name="nixos-rebuild switch", plan=plan)
        operations.verify(name="Verify Tailscale is Running", plan=plan)
    else:
        operations.check(name="Check the host and that Tailscale is Running", plan=plan)
