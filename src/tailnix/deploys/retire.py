"""Take tailnix off the hosts given with --limit: the reverse of deploys/tailscale.py (`tailnix retire`).

    pyinfra inventory.py deploys/retire.py --limit HOST

On each host: log the node out, remove the module, the secrets file and the import, and switch (with the
deploy's rollback). The steps come with tailnix (tailnix.retirement).
"""

from tailnix.retirement import retire_tailscale

retire_tailscale()
