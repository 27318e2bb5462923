"""What `tailnix lab up` hands the admin besides the hosts: keys, demo secrets, a pyinfra inventory.

- `DIR/ssh/id_ed25519`: the admin SSH key every host lets in as root;
- `DIR/admin.agekey`: the admin's age identity (the workstation's key);
- `DIR/.sops.yaml`: one creation rule for `secrets/tailscale.yaml` with ONE key group (admin and
  every NixOS host), anchors named after the hosts, as sops users write it;
- `DIR/secrets/tailscale.yaml`: a reusable auth key of the lab's control plane, encrypted with sops;
- `DIR/inventory.py`: groups `lab_nixos` and `lab_other` with the SSH and tailnix data of each host.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tailnix_lab.layout import STANDIN_URL, LabError, LabHost, LabLayout

if TYPE_CHECKING:
    from collections.abc import Mapping

SECRETS_PATH_REGEX = r"secrets/tailscale\.yaml$"
AUTH_KEY_SECRET = "tailscale_auth_key"
AUTH_KEY_DAYS = 90
ADMIN_ANCHOR = "admin"


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def write_admin_ssh_key(layout: LabLayout) -> str:
    """Create the admin SSH key pair; return its public `ssh-ed25519 AAAA...` line."""
    layout.ssh_key.parent.mkdir(parents=True, exist_ok=True)
    layout.ssh_key.parent.chmod(0o700)
    _run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "tailnix-lab-admin",
            "-f",
            str(layout.ssh_key),
        ]
    )
    return layout.ssh_key.with_suffix(".pub").read_text().strip()


def write_admin_age_key(layout: LabLayout) -> str:
    """Create the admin age identity with `age-keygen`; return its `age1...` recipient."""
    _run(["age-keygen", "-o", str(layout.admin_agekey)])
    layout.admin_agekey.chmod(0o600)
    return _run(["age-keygen", "-y", str(layout.admin_agekey)]).strip()


def render_sops_config(recipients: Mapping[str, str]) -> str:
    """Render `.sops.yaml` with one rule and one key group holding every recipient.

    + recipients: anchor name (`admin`, `nixos-1`, ...) -> `age1...` recipient
    """
    keys = "".join(f"  - &{anchor} {recipient}\n" for anchor, recipient in recipients.items())
    group = "".join(f"          - *{anchor}\n" for anchor in recipients)
    return (
        "# Who can read the lab's secrets: the admin and every NixOS host (SSH host key as age).\n"
        "keys:\n"
        f"{keys}"
        "creation_rules:\n"
        f"  - path_regex: {SECRETS_PATH_REGEX}\n"
        "    key_groups:\n"
        "      - age:\n"
        f"{group}"
    )


def write_demo_secrets(layout: LabLayout, hosts: list[LabHost]) -> None:
    """Write the admin age key, `.sops.yaml` and the encrypted demo auth key for NixOS `hosts`."""
    from tailnix.agekey import ssh_public_key_to_age
    from tailnix.sops import encrypt_values
    from tailnix_lab.emulator.control import ControlPlane

    recipients = {ADMIN_ANCHOR: write_admin_age_key(layout)}
    for host in hosts:
        if host.os == "nixos":
            recipients[host.name] = ssh_public_key_to_age(host.host_key_public)
    layout.sops_config.write_text(render_sops_config(recipients))
    parsed = yaml.safe_load(layout.sops_config.read_text())
    if parsed["creation_rules"][0]["key_groups"][0]["age"] != list(recipients.values()):
        raise LabError(f"{layout.sops_config} does not say what was meant: {parsed}")

    auth_key = ControlPlane(layout.control).mint_key(reusable=True, expiry_days=AUTH_KEY_DAYS)
    layout.secrets_file.parent.mkdir(parents=True, exist_ok=True)
    encrypt_values(
        {AUTH_KEY_SECRET: "TAILSCALE_AUTH_KEY=" + auth_key},
        target=layout.secrets_file,
        config=layout.sops_config,
        age_key_file=layout.admin_agekey,
    )


def host_inventory_data(
    layout: LabLayout, host: LabHost, secrets_file: Path | None = None
) -> dict[str, object]:
    """The pyinfra data of one lab host: how to reach it, and the tailnix settings for the lab.

    A host with a sudo user is reached as that user, with `_sudo: True`, as a fleet that refuses
    root logins is.
    """
    login: dict[str, object] = {"ssh_user": "root"}
    if host.sudo_user is not None:
        login = {"ssh_user": host.sudo_user, "_sudo": True}
    return {
        "ssh_hostname": "127.0.0.1",
        "ssh_port": host.port,
        **login,
        "ssh_key": str(layout.ssh_key),
        "ssh_known_hosts_file": str(layout.known_hosts),
        "ssh_strict_host_key_checking": "yes",
        "tailnix_secrets_file": str((secrets_file or layout.secrets_file).resolve()),
        "tailnix_sops_nix_url": STANDIN_URL,
        "tailnix_sops_nix_sha256": layout.standin_sha256.read_text().strip(),
    }


def render_own_fleet(layout: LabLayout, hosts: list[LabHost]) -> str:
    """An `inventory.py` for a fleet of one's own (`tailnix init DIR`) that reaches the lab's NixOS hosts.

    Only what such a fleet cannot know: how to reach each host, and the sops-nix source the hosts can fetch
    (they have no network). The secrets file, `.sops.yaml` and the known-hosts file stay the fleet's own, so
    `tailnix bootstrap` shows each host key and records it there, as on real machines.
    """
    reach = ("ssh_hostname", "ssh_port", "ssh_user", "_sudo", "ssh_key", "tailnix_sops_nix_url",
             "tailnix_sops_nix_sha256")  # fmt: skip
    members = [
        (host.name, {k: v for k, v in host_inventory_data(layout, host).items() if k in reach})
        for host in hosts
        if host.os == "nixos"
    ]
    text = render_inventory({"lab_hosts": members}, layout) if members else "\nlab_hosts = []\n"
    header = (
        f"# The NixOS hosts of the tailnix lab in {layout.root}, for the inventory.py of a fleet made by\n"
        "# `tailnix init`: copy this file over it. An auth key the lab's control plane knows is in the lab's\n"
        f"# own secrets file: SOPS_AGE_KEY_FILE={layout.admin_agekey} sops -d {layout.secrets_file}\n"
    )
    body = text[text.index("\nlab_hosts = [") :]
    return header + body


def render_inventory(groups: Mapping[str, list[tuple[str, dict[str, object]]]], layout: LabLayout) -> str:
    """Render a pyinfra `inventory.py`: one module-level list of `(name, data)` per group."""
    lines = [
        f"# pyinfra inventory of the tailnix lab in {layout.root}, written by `tailnix lab`.",
        "# The lab rewrites it on `tailnix lab up`; edit a copy instead.",
        "import os as _os",
        "",
        "# The lab's admin age key, where sops looks for one: the deploy decrypts the auth key on this",
        "# machine to check its form (a fleet's admin keeps theirs in ~/.config/sops/age/keys.txt).",
        f"_os.environ.setdefault('SOPS_AGE_KEY_FILE', {str(layout.admin_agekey)!r})",
    ]
    for group, members in groups.items():
        if not members:
            continue
        lines += ["", f"{group} = ["]
        for name, data in members:
            lines.append(f"    ({name!r}, {{")
            lines += [f"        {key!r}: {value!r}," for key, value in data.items()]
            lines.append("    }),")
        lines.append("]")
    return "\n".join(lines) + "\n"


def write_inventory_file(
    layout: LabLayout,
    path: Path,
    hosts: list[LabHost],
    *,
    host_data: Mapping[str, Mapping[str, object]] | None = None,
    secrets_file: Path | None = None,
) -> None:
    """Write a pyinfra inventory of `hosts` to `path`; `host_data[name]` overrides a host's data."""
    extra = host_data or {}
    unknown = sorted(set(extra) - {host.name for host in hosts})
    if unknown:
        raise LabError(f"host_data names hosts that are not in the inventory: {', '.join(unknown)}")
    groups: dict[str, list[tuple[str, dict[str, object]]]] = {"lab_nixos": [], "lab_other": []}
    for host in hosts:
        data = host_inventory_data(layout, host, secrets_file) | dict(extra.get(host.name, {}))
        groups["lab_nixos" if host.os == "nixos" else "lab_other"].append((host.name, data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_inventory(groups, layout))
    if path == layout.inventory:
        layout.own_fleet.write_text(render_own_fleet(layout, hosts))
