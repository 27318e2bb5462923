"""The fleet repository `tailnix init` writes: a user's own inventory, settings, playbook and sops rules.

Where a file must agree with the library it comes from it: the defaults in `group_data/all.py` are
`tailnix.settings`' defaults (but for the secrets: a new fleet gets one file per host,
`PER_HOST_SECRETS_FILE`), the `.sops.yaml` rule covers the admins' copy of the key, and
`deploys/tailscale.py` is the package's own (`tailnix/deploys/tailscale.py`), a few lines that call the
playbook, `tailnix.playbook`. The repository's own `config.py`, `deploys/tailscale.py` and
`group_data/all.py` are these same files (a unit test holds them equal), so the repository is the worked
example of what `tailnix init` gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tailnix.settings import (
    ADMIN_COPY_NAME,
    HOST_PLACEHOLDER,
    PER_HOST_SECRETS_FILE,
    TailscaleSettings,
    host_file,
)
from tailnix.sops_config import host_rule_regex

# A directory holding only these still counts as empty (`git init` first, then `tailnix init`).
IGNORED_WHEN_EMPTY = frozenset({".git"})
ADMIN_PLACEHOLDER = "AGE_PUBLIC_KEY_OF_THE_ADMIN"
"""Where `.sops.yaml` wants the admin's age recipient; sops refuses the file until it is replaced."""

# The deploy file as the package installs it (`tailnix deploy` falls back to it): one text for both.
DEPLOY_FILE = resources.files("tailnix.deploys").joinpath("tailscale.py").read_text(encoding="utf-8")

# pyinfra's settings, as the package installs them (`tailnix` runs pyinfra with them when a fleet has none).
CONFIG_FILE = resources.files("tailnix.deploys").joinpath("config.py").read_text(encoding="utf-8")

INVENTORY_FILE = """\
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
# recipient in .sops.yaml (`tailnix bootstrap HOST` records it). Uncomment the groups below and
# replace the example hosts with yours.

# workstations = [
#     # The node's name in the tailnet is the host's own hostname (networking.hostName), not this name,
#     # unless tailscale_hostname sets it.
#     ("desk", {"ssh_hostname": "desk.lan"}),
#     ("laptop", {"ssh_hostname": "192.168.1.20", "ssh_user": "root"}),
# ]

# routers = [
#     # A subnet router: makes the home LAN reachable from the tailnet (approve the route in the admin console).
#     (
#         "gateway",
#         {
#             "ssh_hostname": "gateway.lan",
#             "tailscale_advertise_routes": ["192.168.1.0/24"],
#             "tailscale_advertise_tags": ["tag:router"],
#             # An exit node too: other devices may send all their traffic through it.
#             "tailscale_advertise_exit_node": True,
#         },
#     ),
# ]

# More settings a host or group may set (see group_data/all.py for the defaults):
#   tailscale_hostname = "name-in-the-tailnet"
#   tailscale_ssh = True                          Tailscale SSH
#   tailscale_login_server = "https://headscale.example.com"
#   tailscale_extra_up_flags = ["--accept-dns=false"]
#   tailnix_mode = "native"                       NixOS's own services.tailscale.authKeyFile
"""

GITIGNORE_FILE = """\
# Never commit a decrypted secret or a private key. The sops-encrypted files in secrets/hosts/ are meant to
# be committed: each host receives its own, and only it and the admins can open it.
*.dec
*.decrypted
*.plain
*.agekey
keys.txt
# Left behind by Python and pyinfra.
__pycache__/
.venv/
pyinfra-debug.log
"""


def _python(value: object) -> str:
    """A Python literal for a default, as the formatter writes it (double quotes)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def render_group_data(defaults: TailscaleSettings) -> str:
    """`group_data/all.py`: the fleet-wide settings, set to tailnix's own defaults and explained."""
    return f"""\
# Fleet-wide defaults for every host. A group's file (group_data/<group>.py) or a host's own data in
# inventory.py overrides any of them. `tailnix module HOST -i inventory.py` shows what a host gets.

# The sops-encrypted file that holds the auth key, relative to where pyinfra runs: one per host, {{host}}
# being the inventory name, each encrypted for the admins and that host only (`tailnix bootstrap HOST`
# makes it). A fleet whose hosts share one file names it ("secrets/tailscale.yaml"); see the README.
tailnix_secrets_file = {_python(PER_HOST_SECRETS_FILE)}
# The key inside that file. Its value is `tskey-auth-...` or the form `TAILSCALE_AUTH_KEY=tskey-auth-...`.
tailnix_secret_name = {_python(defaults.secret_name)}

# "autoconnect": tailnix's own join unit (the key never reaches a command line; settings reach a node
# that is already joined). "native": NixOS's services.tailscale.authKeyFile (needs the bare key).
tailnix_mode = {_python(defaults.mode)}

# The sops-nix the generated module fetches. This commit needs a NixOS release whose nixpkgs has Go 1.25
# (25.11). To move it: nix-prefetch-url --unpack https://github.com/Mic92/sops-nix/archive/<commit>.tar.gz
tailnix_sops_nix_url = (
    {_python(defaults.sops_nix.url)}
)
tailnix_sops_nix_sha256 = {_python(defaults.sops_nix.sha256)}

# `tailscale up` flags. The original recipe accepts routes from subnet routers; so do we.
tailscale_accept_routes = {_python(defaults.accept_routes)}
tailscale_ssh = {_python(defaults.ssh)}

# Node keys expire after the tailnet's key expiry (180 days by default) and the node must log in again.
# False disables that for the device through the Tailscale API after the deploy (`tailnix deploy` needs an
# OAuth client with the devices:core scope: $TS_API_CLIENT_ID and $TS_API_CLIENT_SECRET, or --oauth-file).
tailscale_key_expiry = {_python(defaults.key_expiry)}

# A host reinstalled (or whose /var/lib/tailscale was lost) joins as a new device; while its old device is
# on the tailnet, the new one is named `host-1`. With an OAuth client (devices:core), `tailnix deploy`
# deletes such an offline device of the same name first, for a node that is not logged in.
tailnix_replace_offline_device = {_python(defaults.replace_offline_device)}

# How long the verify step waits for a host to report Running (seconds).
tailnix_verify_timeout = {_python(defaults.verify_timeout)}

# pyinfra's SSH: host keys are checked against known_hosts beside the inventory (commit it: it holds
# public keys only), and a host whose key is not there is refused, never trusted silently.
# `tailnix bootstrap HOST` shows a new host's key fingerprint and records it there once you confirm it.
ssh_known_hosts_file = "known_hosts"
ssh_strict_host_key_checking = "yes"
"""


# age-keygen does not make the directory of its output file.
MAKE_AGE_KEY = "mkdir -p ~/.config/sops/age && age-keygen -o ~/.config/sops/age/keys.txt"


def render_sops_config(secrets_template: str, admin_recipient: str | None = None) -> str:
    """`.sops.yaml`: the rule for the admins' copy of the key; `tailnix bootstrap` adds one per host.

    + secrets_template: the per-host `tailnix_secrets_file` (`secrets/hosts/{host}.yaml`)
    + admin_recipient: the admin's `age1...` recipient; without it, a placeholder the admin replaces
    """
    admins_copy = host_file(Path(secrets_template), ADMIN_COPY_NAME).as_posix()
    path_regex = f"'{host_rule_regex(admins_copy)}'"
    if admin_recipient is None:
        admin_step = f"""\
# 1. Your age key, where sops looks for it. Make one (or use yours):
#      {MAKE_AGE_KEY}
#    and replace {ADMIN_PLACEHOLDER} below with its public half: the age1... line that
#    `age-keygen -y ~/.config/sops/age/keys.txt` prints. The private AGE-SECRET-KEY-... line never goes
#    here, nor anywhere in this repository."""
    else:
        admin_step = """\
# 1. The admins' age keys: the public half (age1...) of each. `tailnix init` put the one sops finds on the
#    admin's machine below; another admin adds theirs as `- &NAME age1...` and `- *NAME`. The private
#    AGE-SECRET-KEY-... line never goes here, nor anywhere in this repository."""
    return f"""\
# Who can open which secrets file. Each host has its own ({secrets_template}), for the
# admins and that host only; {admins_copy} is the admins' own copy of the key. sops reads
# this file when it encrypts; `tailnix bootstrap` and `tailnix forget` edit it as text and keep these
# comments.
#
{admin_step}
# 2. The hosts. `tailnix bootstrap HOST...` reads each host's SSH host key and records it: `- &HOST age1...`
#    under keys, and a rule for the host's file alone, above the admins' rule, whose key group is the
#    admins and `*HOST`.
#
# Keep each rule's recipients in ONE key group: a second `- age:` entry makes a second group, and a host
# would then need a key from each to decrypt.
keys:
  - &admin {admin_recipient or ADMIN_PLACEHOLDER}
creation_rules:
  - path_regex: {path_regex}
    key_groups:
      - age:
          - *admin
"""


def render_readme(secrets_template: str, secret_name: str) -> str:
    """The fleet's README.md: the next steps, from an empty inventory to a fleet on the tailnet."""
    secrets = host_file(Path(secrets_template), ADMIN_COPY_NAME).as_posix()
    hosts_file = secrets_template.replace(HOST_PLACEHOLDER, "HOST")
    return f"""\
# Our NixOS fleet on Tailscale

Deployed with tailnix and pyinfra; the auth key is kept encrypted with sops, for the admins and the hosts
only. `sops` comes with tailnix: it sits beside `tailnix` in its virtualenv (pipx puts it on your PATH when
tailnix is installed with `pipx install --include-deps`).

## Next steps

1. **Your age key** in `.sops.yaml`: `tailnix init` put there the one sops finds on your machine
   (`$SOPS_AGE_KEY_FILE` or `~/.config/sops/age/keys.txt`), and made it if there was none. Back that file
   up: it never goes into this repository.
2. **Your hosts** in `inventory.py` (and settings in `group_data/all.py`).
3. **The auth key.** Make a reusable key in the Tailscale admin console (90 days at most); this asks for it
   without echo (or reads it from stdin) and writes it, as `{secret_name}`, into `{secrets}`, the admins'
   own copy (encrypted for the admins only), and into each bootstrapped host's own file:

   ```
   tailnix rotate-key --no-deploy             # or: tailnix rotate-key --no-deploy --mint --tag tag:NAME
   ```
4. **Bootstrap** the hosts: each new host's SSH host key is shown with its fingerprint and, once you
   confirm it, recorded in `known_hosts` (commit it); the host gets a rule in `.sops.yaml` and its own
   file, `{hosts_file}`, encrypted for the admins and that host only; then the host is deployed. Each
   deploy records the node it saw on each host in `tailnix-nodes.json` (commit it too: `tailnix retire`
   finds a host's device by it when the host no longer answers).

   ```
   tailnix bootstrap desk laptop gateway      # or: tailnix bootstrap --limit GROUP
   ```

## Day to day

```
tailnix deploy                            # or: pyinfra inventory.py deploys/tailscale.py
tailnix status                            # every host Running, and every host sees the others
tailnix check                             # for cron or CI: key expiry, recipients, no secret in git
tailnix rotate-key < new-key.txt          # before the key expires; records the expiry for check
tailnix retire oldbox                     # off the tailnet, its rule and its file go
tailnix forget oldbox                     # the offline half: its rule and its file go; rotate the key, it knew it
```

Each command has `--help`, with an example.
"""


@dataclass(frozen=True)
class FleetFile:
    """One file of the fleet repository: its path inside it and its text."""

    path: str
    text: str


def fleet_files(
    defaults: TailscaleSettings | None = None, *, admin_recipient: str | None = None
) -> list[FleetFile]:
    """Every file `tailnix init` writes, in the order it lists them (`.sops.yaml` names `admin_recipient`)."""
    defaults = defaults or TailscaleSettings(host="all")
    return [
        FleetFile("inventory.py", INVENTORY_FILE),
        FleetFile("group_data/all.py", render_group_data(defaults)),
        FleetFile("deploys/tailscale.py", DEPLOY_FILE),
        FleetFile("config.py", CONFIG_FILE),
        FleetFile(".sops.yaml", render_sops_config(PER_HOST_SECRETS_FILE, admin_recipient)),
        FleetFile(f"{Path(PER_HOST_SECRETS_FILE).parent.as_posix()}/.gitkeep", ""),
        FleetFile(".gitignore", GITIGNORE_FILE),
        FleetFile("README.md", render_readme(PER_HOST_SECRETS_FILE, defaults.secret_name)),
    ]


class InitError(ValueError):
    """The fleet repository cannot be written; the message names the path and what to do."""


@dataclass
class InitReport:
    """What `write_fleet` did with each file."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    """Files that were there with other content: the user's, left alone."""


def check_directory(directory: Path, *, force: bool = False) -> None:
    """Refuse (InitError) a `directory` `write_fleet` would refuse, before anything else is made."""
    if directory.exists() and not directory.is_dir():
        raise InitError(f"{directory} is a file, not a directory: give a new or empty directory")
    present: list[str] = []
    if directory.is_dir():
        try:
            present = sorted(
                entry.name for entry in directory.iterdir() if entry.name not in IGNORED_WHEN_EMPTY
            )
        except OSError as error:
            raise InitError(f"cannot read {directory}: {error.strerror}; check its permissions") from None
    if present and not force:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise InitError(
            f"{directory} is not empty ({shown}): give a new or empty directory, or --force to add the "
            "missing files there (files already there are kept, never overwritten)"
        )


def write_fleet(directory: Path, *, force: bool = False, admin_recipient: str | None = None) -> InitReport:
    """Write the fleet repository into `directory` (made if missing).

    A directory with anything in it but `.git` is refused unless `force`; then the missing files are
    added, and a file that is already there is never overwritten: it is reported as kept.
    """
    check_directory(directory, force=force)
    report = InitReport()
    for item in fleet_files(admin_recipient=admin_recipient):
        target = directory / item.path
        if target.is_symlink() or target.exists():
            if target.is_file() and target.read_text(errors="replace") == item.text:
                report.unchanged.append(target)
            else:
                report.kept.append(target)
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(item.text)
        except OSError as error:
            raise InitError(
                f"cannot write {target}: {error.strerror}; {target.parent} must be a directory you can write to"
            ) from None
        report.written.append(target)
    return report
