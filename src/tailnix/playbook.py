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

from tailnix import operations, steps
from tailnix.plan import plan_host


def deploy_tailscale() -> None:
    """Add the steps that put the current host on the tailnet (pyinfra runs the deploy file per host).

    The operation names (tailnix.steps) are part of the interface: `tailnix deploy` and scripts reading
    `pyinfra --json` find the switch by its name, `nixos-rebuild switch`.
    """
    # Settings and the local secrets file are checked here, for every host, before any host is changed.
    plan = operations.begin_host(lambda: plan_host(host.name, host.data.dict()))  # type: ignore[no-untyped-call]

    # A host that cannot be deployed to is refused before any operation (an OperationError, failing this
    # host alone): a dry run shows the refusal, not changes, and a real run goes on with the other hosts.
    with operations.refused_alone():
        # A host reached as a user with sudo: sudo must work without a password before anything runs
        # through it.
        operations.require_sudo()
        # The host's state is read once, in one round trip. None: pyinfra could not read it, has said why,
        # and counts the host as failed.
        state = operations.host_state(plan.settings.lock_timeout)
        if state is not None:
            operations.require_deployable(state, plan)
            # Prefs set by hand that the switch's `tailscale up --reset` would clear, said before any change.
            operations.report_drift(state, plan)
            # A host that needs no change gets one operation: the checks and the verification (each
            # operation costs the deployer time for every host of the fleet).
            if operations.changes_needed(state, plan):
                operations.preflight(name=steps.PREFLIGHT, plan=plan)
                operations.secrets_file(name=steps.SECRETS_FILE, plan=plan)
                operations.module_file(name=steps.MODULE_FILE, plan=plan)
                operations.configuration_import(name=steps.IMPORT)
                operations.flake_git_index(name=steps.GIT_INDEX)
                operations.rebuild(name=steps.SWITCH, plan=plan)
                if operations.planned_reauthentication(state, plan) is not None:
                    operations.reauthenticate(name=steps.REAUTHENTICATE, plan=plan)
                operations.verify(name=steps.VERIFY, plan=plan)
            else:
                operations.check(name=steps.CONVERGED, plan=plan)
