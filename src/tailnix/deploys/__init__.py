"""The deploy file pyinfra runs, as installed: `tailscale.py` calls the playbook (`tailnix.playbook`).

`tailnix init` writes this same file into a fleet repository as `deploys/tailscale.py`, and `tailnix deploy`
runs it when the current directory has no `deploys/tailscale.py` of its own. Nothing imports it: pyinfra
executes it once per host.
"""
