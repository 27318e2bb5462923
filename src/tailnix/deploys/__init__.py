"""The files pyinfra runs, as installed: `tailscale.py` calls the playbook (`tailnix.playbook`), and
`config.py` holds pyinfra's settings.

`tailnix init` writes these same files into a fleet repository (`deploys/tailscale.py`, `config.py`), and
the `tailnix` commands run pyinfra with them when the inventory's directory has no copy of its own.
Nothing imports them: pyinfra executes them.
"""
