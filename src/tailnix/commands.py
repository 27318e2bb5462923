"""The fleet commands of `tailnix`: init, bootstrap, retire, forget, rotate-key, check, deploy and status.

Exit codes (also in the README):

- init: 0 written; 1 refused or not written (the message names the path and what to do); 2 a usage error.
- bootstrap, forget, rotate-key, deploy: 0 done on every host; 1 something failed (named in the output);
  2 a usage error.
- retire: 0 all done (or retired already); 1 something failed or was left (named in the output);
  2 a usage error.
- check: 0 fine; 1 a warning (the key expires within --warn-days, or its expiry is not recorded; with
  --hosts, a node key that expires within --warn-days); 2 expired or broken (or the check could not run).
- rotate-key --mint --if-expiring-within DAYS: 0 also when there is nothing to do yet.
- status: 0 every host healthy and the mesh complete; 1 a host is not healthy; 2 the status could not be
  read (bad inventory, usage error).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from tailnix import headscale, mint, paths, retire, steps
from tailnix.adminkey import AdminKeyError, find_or_make_admin_key, sops_age_key_file
from tailnix.authkey import (
    BROKEN,
    OK,
    WARNING,
    AuthKeyError,
    Finding,
    check_expiry,
    check_git,
    check_no_oauth_client,
    check_recipients,
    normalise_key,
    rotate_key,
)
from tailnix.drift import status_sentence
from tailnix.fleet import (
    FleetError,
    FleetHost,
    PerHostSecrets,
    SecretsLayout,
    SecretsLocation,
    UnknownHostsError,
    fleet_data,
    inventory_directory,
    load_fleet,
    secrets_layout,
    select_hosts,
)
from tailnix.host_secrets import (
    PerHostRotation,
    bootstrap_per_host,
    check_per_host,
    forget_per_host,
    recipient_per_host,
    rotate_per_host,
    setting_line,
    split_shared,
)
from tailnix.host_secrets import write_setting as write_setting_line
from tailnix.interrupt import INTERRUPTED_EXIT
from tailnix.key_expiry import (
    KEY_EXPIRY_CHANGE,
    KeyExpiryResult,
    disable_node_key_expiry,
    read_expiring_devices,
)
from tailnix.keyform import key_kind
from tailnix.known_hosts import HostAddress, HostKeyScanError, NewHostKey, is_known, record, scan
from tailnix.node_records import update_records
from tailnix.recipients import RecipientChange, RecipientUpdate, forget_recipient, record_recipients
from tailnix.reinstall import replace_offline_devices
from tailnix.retag import retag_on_headscale
from tailnix.rotation import headscale_rotation_due, rotation_due
from tailnix.routes import (
    RouteResult,
    approval_change,
    approve_routes,
    read_unapproved,
    read_withdrawals,
    withdrawal_change,
)
from tailnix.runner import DeployOutcome, HostDeployResult, dry_run, run_batched_deploy
from tailnix.secrets_file import KEY_EXPIRY_WARNING_DAYS
from tailnix.settings import HOST_PLACEHOLDER, PER_HOST_SECRETS_FILE, SettingsError, parse_settings
from tailnix.skeleton import InitError, check_directory, write_fleet
from tailnix.status import fleet_status, node_key_findings

DEFAULT_KEY_DAYS = 90
Command = TypeVar("Command", bound=Callable[..., Any])


class CannotRun(click.ClickException):
    """The command could not do its check at all (exit 2, the same as broken)."""

    exit_code = 2


def inventory_option(command: Command) -> Command:
    """`-i/--inventory PATH`, default inventory.py."""
    return click.option(
        "-i",
        "--inventory",
        "inventory_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("inventory.py"),
        show_default=True,
        help="The pyinfra inventory of the fleet.",
    )(command)


def limit_option(command: Command) -> Command:
    """`--limit GROUP` (repeatable), as pyinfra's."""
    return click.option(
        "--limit",
        "limits",
        multiple=True,
        metavar="GROUP",
        help="Only the hosts of this inventory group (or this host); repeat for more.",
    )(command)


quiet_option = click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only errors and the last line of the summary (for cron); the exit code is the same.",
)
"""`-q/--quiet` of the commands that deploy: only errors and the summary's last line."""


def warn_days_option(help_text: str) -> Callable[[Command], Command]:
    """`--warn-days N`, 0 to 365, default KEY_EXPIRY_WARNING_DAYS."""
    return click.option(
        "--warn-days",
        type=click.IntRange(0, 365),
        default=KEY_EXPIRY_WARNING_DAYS,
        show_default=True,
        help=help_text,
    )


def oauth_options(when: str) -> Callable[[Command], Command]:
    """--oauth-file and --api-url: where the Tailscale API's OAuth client is found, and the API."""

    def add(command: Command) -> Command:
        command = click.option(
            "--api-url",
            envvar=mint.BASE_URL_ENV,
            default=mint.DEFAULT_BASE_URL,
            show_default=True,
            help=f"{when}the Tailscale API (also ${mint.BASE_URL_ENV}).",
        )(command)
        return click.option(
            "--oauth-file",
            type=click.Path(path_type=Path, dir_okay=False),
            help=(
                f"{when}a sops file, encrypted for the admins only, holding {mint.CLIENT_ID_SECRET} and "
                f"{mint.CLIENT_SECRET_SECRET} (used when the environment has no client)."
            ),
        )(command)

    return add


sops_config_option = click.option(
    "--sops-config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The .sops.yaml to edit (default: the nearest one at or above the secrets file).",
)
"""`--sops-config PATH`: the .sops.yaml, found from the secrets file by default."""


def sops_options(command: Command) -> Command:
    """`--secrets-file` and `--sops-config`, both found from the inventory by default."""
    command = sops_config_option(command)
    return click.option(
        "--secrets-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The encrypted secrets file (default: the hosts' tailnix_secrets_file).",
    )(command)


def _fleet(inventory_file: Path, names: tuple[str, ...], limits: tuple[str, ...]) -> list[FleetHost]:
    return _select(load_fleet(inventory_file), names, limits)


def _select(fleet: list[FleetHost], names: tuple[str, ...], limits: tuple[str, ...]) -> list[FleetHost]:
    try:
        return select_hosts(fleet, names, limits)
    except UnknownHostsError as error:
        raise click.UsageError(str(error)) from None


def _layout(
    inventory_file: Path, hosts: list[FleetHost], secrets_file: Path | None, sops_config: Path | None
) -> SecretsLayout:
    """The fleet's secrets: one shared file, or one per host (`{host}` in tailnix_secrets_file)."""
    return secrets_layout(
        hosts,
        base_dir=inventory_directory(inventory_file),
        fleet_wide=fleet_data(inventory_file) if not hosts and inventory_file.is_file() else None,
        secrets_file=secrets_file,
        sops_config=sops_config,
    )


def _file_of(layout: SecretsLayout) -> SecretsLocation:
    """The file that holds the fleet's key: the shared one, or the admins' copy."""
    return layout.admin_copy if isinstance(layout, PerHostSecrets) else layout


def _forget(layout: SecretsLayout, host: str) -> RecipientUpdate:
    """Take the host's recipient out: its rule and its own file, or out of the shared file."""
    if isinstance(layout, PerHostSecrets):
        return forget_per_host(layout, host)
    return forget_recipient(layout, host)


def _print_recipients(update: RecipientUpdate, location: SecretsLocation, *, quiet: bool = False) -> None:
    for change in update.changes:
        if quiet and change.ok:
            continue
        shown = f" ({change.recipient})" if change.recipient and change.outcome != "failed" else ""
        prefix = "error: " if not change.ok else ""
        click.echo(f"{change.host}: {prefix}{change.message}{shown}", err=not change.ok)
    if quiet:
        return
    if update.config_changed:
        click.echo(f"{location.sops_config}: updated")
    for path in update.files_written:
        click.echo(f"{path}: written, for the admins and its host only")
    for path in update.files_deleted:
        click.echo(f"{path}: deleted")
    if update.secrets_reencrypted and not update.files_written:
        click.echo(f"{location.secrets_file}: re-encrypted")
    if not update.config_changed and not update.secrets_reencrypted and not update.files_deleted:
        click.echo(f"{location.sops_config.name} and the secrets files: nothing to change")


class DeployReport:
    """What a user sees of a deploy: a line per host as it goes, then a summary.

    + total: how many hosts the deploy has
    + quiet: only failed hosts and the summary's last line (for cron)
    """

    def __init__(self, total: int, *, quiet: bool = False) -> None:
        self.total = total
        self.quiet = quiet
        self._seen = 0

    def step(self, host: str, step: str) -> None:
        """A host began a step that takes time."""
        if not self.quiet:
            click.echo(f"{host}: {step} ...")

    def host(self, result: HostDeployResult) -> None:
        """A host has ended: its result line, with the sentence tailnix said about it."""
        self._seen += 1
        if self.quiet and result.ok:
            return
        state = "ok" if result.ok else "FAILED"
        switched = "switched" if result.switched else "-"
        detail = f", {result.detail}" if result.detail else ""
        click.echo(f"[{self._seen}/{self.total}] {result.host}: {state}, {switched}{detail}")

    def summary(self, outcome: DeployOutcome) -> None:
        """The table of every host, and one line of counts (the only line when quiet)."""
        if not self.quiet:
            _table(outcome)
            click.echo("")
        failed = sum(not h.ok for h in outcome.hosts)
        click.echo(
            f"{_hosts(len(outcome.hosts))} deployed: {len(outcome.hosts) - failed} ok, {failed} failed"
            + (f", {len(outcome.not_attempted)} not run" if outcome.not_attempted else "")
        )
        if outcome.stopped_reason:
            click.echo(outcome.stopped_reason, err=True)


def _table(outcome: DeployOutcome) -> None:
    """A row per host, the reason in its last column; under it, the lines that show why hosts failed."""
    rows = [("HOST", "RESULT", "SWITCHED", "DETAIL")]
    rows += [
        (h.host, "ok" if h.ok else "failed", "yes" if h.switched else "no", h.detail) for h in outcome.hosts
    ]
    rows += [(name, "not run", "no", "") for name in outcome.not_attempted]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    click.echo("")
    for row in rows:
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        click.echo(f"{cells}  {row[3]}".rstrip())
    for result in outcome.hosts:
        if not result.ok and result.evidence:
            click.echo(f"\n{result.host}:")
            for line in result.evidence:
                click.echo(f"  {line}")


def _hosts(count: int) -> str:
    return f"{count} host" if count == 1 else f"{count} hosts"


def _deploy(
    inventory_file: Path,
    hosts: list[str],
    *,
    batch: int | None = None,
    fail_percent: int | None = None,
    quiet: bool = False,
    oauth_file: Path | None = None,
    api_url: str | None = None,
) -> DeployOutcome:
    if not hosts:
        return DeployOutcome()
    members = [host for host in load_fleet(inventory_file) if host.name in hosts]
    _replace_offline_devices(inventory_file, members, oauth_file, api_url, quiet=quiet)
    _retag_on_headscale(inventory_file, members, quiet=quiet)
    report = DeployReport(len(hosts), quiet=quiet)
    outcome = run_batched_deploy(
        inventory_file,
        hosts,
        batch=batch,
        fail_percent=fail_percent,
        on_host=report.host,
        on_step=report.step,
    )
    if not outcome.interrupted:
        _set_key_expiry(inventory_file, outcome, oauth_file, api_url, quiet=quiet)
    report.summary(outcome)
    if outcome.interrupted:
        click.echo(
            "Interrupted: the deploy did not finish. Each host is on its old configuration or its new one; "
            "run the same command again to complete it.",
            err=True,
        )
        sys.exit(INTERRUPTED_EXIT)
    return outcome


def _api_base(api_url: str | None) -> str:
    """The Tailscale API: --api-url, else $TS_BASE_URL, else Tailscale's."""
    return api_url or os.environ.get(mint.BASE_URL_ENV) or mint.DEFAULT_BASE_URL


def _replace_offline_devices(
    inventory_file: Path, fleet: list[FleetHost], oauth_file: Path | None, api_url: str | None, *, quiet: bool
) -> None:
    """Before the deploy: the offline devices holding the names of nodes about to join are deleted.

    A failure is said and the deploy goes on: the node then joins as `desk-1`, and verify names it.
    """
    for result in replace_offline_devices(
        inventory_file,
        fleet,
        find_client=lambda: _oauth_client(oauth_file),
        base_url=_api_base(api_url),
    ):
        if not result.ok or not quiet:
            click.echo(f"{result.host}: {result.message}", err=not result.ok)


def _retag_on_headscale(inventory_file: Path, fleet: list[FleetHost], *, quiet: bool) -> None:
    """Before the deploy: the tags of Running nodes on headscale are set there (tailnix.retag).

    A failure is said and the deploy goes on: it then refuses the host with the command to run.
    """
    for result in retag_on_headscale(inventory_file, fleet):
        if not result.ok or not quiet:
            click.echo(f"{result.host}: {result.message}", err=not result.ok)


def _set_key_expiry(
    inventory_file: Path, outcome: DeployOutcome, oauth_file: Path | None, api_url: str | None, *, quiet: bool
) -> None:
    """After the deploy, on the hosts it left Running: `tailscale_key_expiry = False` and route approval
    through the API.

    A host for which that fails is a failed host of the deploy, with the reason as its detail.
    """
    deployed = {result.host for result in outcome.hosts if result.ok}
    whole_fleet = load_fleet(inventory_file)
    fleet = [host for host in whole_fleet if host.name in deployed]
    base_url = _api_base(api_url)
    results: list[KeyExpiryResult | RouteResult] = [
        *disable_node_key_expiry(
            inventory_file, fleet, find_client=lambda: _oauth_client(oauth_file), base_url=base_url
        ),
        # Advertised routes and exit nodes: approved through the API where the tailnet has not (and the
        # approvals tailnix made for routes no longer advertised withdrawn), and seen from other fleet hosts.
        *approve_routes(
            inventory_file,
            fleet,
            whole_fleet,
            find_client=lambda: _oauth_client(oauth_file),
            base_url=base_url,
        ),
    ]
    for result in results:
        if isinstance(result, RouteResult) and result.warning:
            click.echo(f"{result.host}: {result.message}", err=True)
            continue
        if result.ok:
            if not quiet:
                click.echo(f"{result.host}: {result.message}")
            continue
        click.echo(f"{result.host}: {result.message}", err=True)
        outcome.hosts = [
            replace(h, ok=False, detail=result.message) if h.host == result.host else h for h in outcome.hosts
        ]


@click.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--force", is_flag=True, help="Write into a non-empty DIRECTORY: add the missing files, keep the rest."
)
def init_command(directory: Path, force: bool) -> None:
    """Write a fleet repository to DIRECTORY: inventory, settings, playbook, sops rules and next steps.

    DIRECTORY is made if missing and must be empty (a .git is fine) unless --force; a file that is
    already there is never overwritten, and the output says which were kept. .sops.yaml names your
    admin age key: the one sops finds ($SOPS_AGE_KEY_FILE, or ~/.config/sops/age/keys.txt), made there
    if there is none. No secret is written into DIRECTORY: `tailnix rotate-key` puts the auth key in
    secrets/, encrypted.

    Example: tailnix init my-fleet
    """
    try:
        check_directory(directory, force=force)
        admin = find_or_make_admin_key(sops_age_key_file())
        report = write_fleet(directory, force=force, admin_recipient=admin.recipient)
    except (InitError, AdminKeyError) as error:
        raise click.ClickException(str(error)) from None
    if admin.made:
        click.echo(
            f"made an admin age key in {admin.path} ({admin.recipient}): sops finds it there; back it up, "
            "it never goes into the fleet repository"
        )
    else:
        click.echo(f"using the admin age key in {admin.path} ({admin.recipient})")
    for path in report.written:
        click.echo(f"wrote {path}")
    for path in report.unchanged:
        click.echo(f"unchanged {path}")
    for path in report.kept:
        click.echo(f"kept {path}: it was there already, with other content; not overwritten")
    click.echo(
        f"\nNext: create the secrets file with your auth key (typed without echo, or minted with --mint):\n"
        f"  cd {directory} && tailnix rotate-key --no-deploy\n"
        f"then put your hosts in {directory / 'inventory.py'} and follow {directory / 'README.md'}."
    )


def _confirmed(question: str) -> bool:
    try:
        return click.confirm(question, default=False)
    except click.Abort:  # no answer (end of input): not confirmed
        click.echo("")
        return False


def _trust_new_host_keys(
    hosts: list[FleetHost], base_dir: Path, *, yes: bool, known_hosts: Path | None
) -> dict[str, str]:
    """Show each host key not yet in its known-hosts file and record the confirmed ones; the rest, and why.

    A host that does not answer is left to pyinfra, which says so.
    """
    new: list[NewHostKey] = []
    for host in hosts:
        address = HostAddress.of(host.name, host.data, base_dir)
        if is_known(address):
            continue
        try:
            new.append(scan(address))
        except HostKeyScanError:
            continue
    if known_hosts is not None:
        for key in new:
            if key.address.known_hosts.resolve() != known_hosts.absolute().resolve():
                raise click.UsageError(
                    f"the inventory points {key.address.host} to {key.address.known_hosts} "
                    f"(ssh_known_hosts_file), not {known_hosts}: pyinfra checks its host key there"
                )
    untrusted: dict[str, str] = {}
    for key in new:
        where = key.address.known_hosts
        click.echo(
            f"{key.address.host}: new host key, not in {where}: {key.key_type} {key.fingerprint} "
            f"({key.address.hostname}:{key.address.port})"
        )
        if yes or _confirmed(f"Is this {key.address.host}'s key? Trust it and record it in {where}?"):
            record(key)
            click.echo(f"{key.address.host}: recorded its host key in {where}")
        else:
            untrusted[key.address.host] = "its host key was not confirmed; nothing was recorded"
    return untrusted


@click.command("bootstrap")
@click.argument("hosts", nargs=-1, metavar="[HOST]...")
@inventory_option
@limit_option
@click.option("--replace-key", is_flag=True, help="Accept a host key that differs from the recorded one.")
@click.option("--no-deploy", is_flag=True, help="Record the recipients only; do not deploy.")
@quiet_option
@click.option(
    "--yes",
    "trust_new_keys",
    is_flag=True,
    help="Trust the new host keys shown without asking (needs --known-hosts).",
)
@click.option(
    "--known-hosts",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The known-hosts file the inventory points the hosts to (ssh_known_hosts_file); new keys go there.",
)
@sops_options
def bootstrap_command(
    hosts: tuple[str, ...],
    inventory_file: Path,
    limits: tuple[str, ...],
    replace_key: bool,
    no_deploy: bool,
    quiet: bool,
    trust_new_keys: bool,
    known_hosts: Path | None,
    secrets_file: Path | None,
    sops_config: Path | None,
) -> None:
    """Make hosts recipients of the secrets file, then deploy to them.

    For each HOST (or each host of --limit GROUP): read its SSH ed25519 host key over SSH with the
    inventory's settings, record its age recipient in .sops.yaml as an anchor named after the host, in
    the single key group of the rule for the secrets file, re-encrypt the file (sops updatekeys), and
    deploy. A host whose key differs from the recorded one is refused unless --replace-key. Safe to
    run again: nothing changes the second time.

    A host key that is not in the host's known-hosts file yet (its ssh_known_hosts_file, or
    ~/.ssh/known_hosts) is shown with its fingerprint and recorded there once you confirm it; --yes
    with --known-hosts FILE records it without asking. Nothing is trusted silently.

    Example: tailnix bootstrap desk gateway
    """
    if not hosts and not limits:
        raise click.UsageError("name the hosts to bootstrap, or a group with --limit")
    if trust_new_keys and known_hosts is None:
        raise click.UsageError(
            "--yes trusts new host keys only with --known-hosts FILE (the file the inventory points the "
            "hosts to), so that what is trusted, and where, is said on the command line"
        )
    try:
        fleet = load_fleet(inventory_file)
        chosen = _select(fleet, hosts, limits)
        layout = _layout(inventory_file, chosen, secrets_file, sops_config)
        location = _file_of(layout)
        untrusted = _trust_new_host_keys(
            chosen, inventory_directory(inventory_file), yes=trust_new_keys, known_hosts=known_hosts
        )
        trusted = [host for host in chosen if host.name not in untrusted]
        if not trusted:
            update = RecipientUpdate()
        elif isinstance(layout, PerHostSecrets):
            update = bootstrap_per_host(inventory_file, trusted, fleet, layout, replace_key=replace_key)
        else:
            update = record_recipients(inventory_file, trusted, layout, replace_key=replace_key)
    except FleetError as error:
        raise click.ClickException(str(error)) from None
    update.changes += [RecipientChange(name, "failed", reason) for name, reason in untrusted.items()]
    _print_recipients(update, location, quiet=quiet)
    ready = [change.host for change in update.changes if change.ok]
    deployed = DeployOutcome() if no_deploy else _deploy(inventory_file, ready, quiet=quiet)
    given = {result.host for result in deployed.hosts if result.ok}
    left_behind = [host.name for host in fleet if host.name not in given]
    # Only a shared file changes for the other hosts: a host's own file is for itself alone.
    if update.secrets_reencrypted and not update.files_written and left_behind and not quiet:
        click.echo(
            f"note: the secrets file was re-encrypted; {', '.join(left_behind)} "
            f"{'has' if len(left_behind) == 1 else 'have'} the old copy until `tailnix deploy`"
        )
    if not all(change.ok for change in update.changes) or not deployed.ok:
        sys.exit(1)


@click.command("forget")
@click.argument("host")
@inventory_option
@sops_options
def forget_command(
    host: str, inventory_file: Path, secrets_file: Path | None, sops_config: Path | None
) -> None:
    """Remove HOST's recipient from .sops.yaml and re-encrypt the secrets file with a new data key.

    The retired machine can no longer read the file, nor any key written into it later. Deploy
    afterwards (`tailnix deploy`) to give the other hosts the re-encrypted file.

    Example: tailnix forget oldbox
    """
    try:
        fleet = load_fleet(inventory_file) if inventory_file.is_file() else []
        layout = _layout(inventory_file, fleet, secrets_file, sops_config)
        location = _file_of(layout)
        update = _forget(layout, host)
    except FleetError as error:
        raise click.ClickException(str(error)) from None
    _print_recipients(update, location)
    if any(change.outcome == "removed" for change in update.changes):
        # The file it could open held the auth key: re-encryption keeps the key from it only if it changes.
        click.echo(
            f"note: {host} could decrypt the auth key until now, and may keep a copy: revoke that key in the "
            "admin console and put a new one in with `tailnix rotate-key` (or `tailnix rotate-key --mint`)"
        )
    if any(h.name == host for h in fleet):
        click.echo(f"note: {host} is still in {inventory_file}; remove it there, or its next deploy fails")


@click.group("secrets")
def secrets_group() -> None:
    """Move the fleet's secrets from one file for every host to one file per host.

    Example: tailnix secrets split --write-setting
    """


@secrets_group.command("split")
@inventory_option
@click.option(
    "--to",
    "template",
    default=PER_HOST_SECRETS_FILE,
    show_default=True,
    help="Where each host's file goes, {host} being its inventory name (relative to the inventory).",
)
@click.option(
    "--write-setting",
    is_flag=True,
    help="Also set tailnix_secrets_file in group_data/all.py (otherwise the line to set is printed).",
)
@sops_config_option
def split_command(inventory_file: Path, template: str, write_setting: bool, sops_config: Path | None) -> None:
    """Turn the shared secrets file into one file per host, each for the admins and that host only.

    Writes the admins' copy of the key and a file for every host that is a recipient of the shared
    file, each with a rule of its own in .sops.yaml, all with the key of the shared file (decrypted with
    your admin age key). The shared file and its rule are kept as they were: the fleet goes on deploying
    it until tailnix_secrets_file names the new files (--write-setting sets it in group_data/all.py);
    delete it once every host has been deployed with its own file, and rotate the key then, since every
    host could read the shared file.

    Example: tailnix secrets split --write-setting
    """
    base_dir = inventory_directory(inventory_file)
    try:
        fleet = load_fleet(inventory_file)
        shared = _layout(inventory_file, fleet, None, sops_config)
        if isinstance(shared, PerHostSecrets):
            raise FleetError(f"the hosts already have one file each ({shared.template}): nothing to split")
        for host in fleet:  # the same checks a deploy makes of the setting, for every host, first
            parse_settings(host.name, {**host.data, "tailnix_secrets_file": template}, base_dir=base_dir)
        chosen = parse_settings("all", {"tailnix_secrets_file": template}, base_dir=base_dir).secrets_template
        if chosen is None:
            raise click.UsageError(
                f"--to {template}: it has no {HOST_PLACEHOLDER}, so it is not one file per host"
            )
        layout = PerHostSecrets(chosen, shared.sops_config, shared.secret_name)
        split = split_shared(shared, layout, fleet)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    except FleetError as error:
        raise click.ClickException(str(error)) from None
    if split.config_changed:
        click.echo(f"{layout.sops_config}: updated, a rule for each file")
    for path in split.written:
        click.echo(f"{path}: written")
    for name in split.without_recipient:
        click.echo(
            f"{name}: not a recipient of {shared.secrets_file.name}: `tailnix bootstrap {name}` gives it its file"
        )
    all_py = base_dir / "group_data" / "all.py"
    if write_setting:
        write_setting_line(all_py, template)
        click.echo(f"{all_py}: {setting_line(template)}")
    else:
        click.echo(f"to deploy them, set in {all_py}:\n  {setting_line(template)}")
    click.echo(
        f"{shared.secrets_file} is kept as it was: delete it (and its rule) once `tailnix deploy` has given every "
        "host its own file, then `tailnix rotate-key`: every host could read it"
    )


@click.command("retire")
@click.argument("host")
@inventory_option
@click.option("--dry", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--yes", is_flag=True, help="Do it without asking (for scripts).")
@click.option("--keep-device", is_flag=True, help="Leave the device in the tailnet.")
@click.option(
    "--oauth-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The OAuth client's sops file, as for rotate-key --mint (when the environment has no client).",
)
@click.option(
    "--api-url",
    envvar=mint.BASE_URL_ENV,
    default=mint.DEFAULT_BASE_URL,
    show_default=True,
    help=f"The Tailscale API (also ${mint.BASE_URL_ENV}).",
)
@sops_options
def retire_command(
    host: str,
    inventory_file: Path,
    dry: bool,
    yes: bool,
    keep_device: bool,
    oauth_file: Path | None,
    api_url: str,
    secrets_file: Path | None,
    sops_config: Path | None,
) -> None:
    """Take HOST off the tailnet and out of the fleet: the reverse of bootstrap.

    Logs the node out, removes tailscale-autoconnect.nix, the secrets file and the import from
    /etc/nixos and switches (with the deploy's rollback), deletes the device through the API (with the
    OAuth client of rotate-key --mint; on a headscale fleet with `headscale nodes delete` on
    tailnix_headscale_host) unless --keep-device, and removes the host's recipient from
    .sops.yaml, re-encrypting the secrets file without it. An unreachable host keeps its files; the rest
    is done. A second retire does nothing. Exit 0: all done; 1: something failed or was left; 2: usage.

    Example: tailnix retire oldbox --yes
    """
    base_dir = inventory_directory(inventory_file)
    try:
        fleet = load_fleet(inventory_file) if inventory_file.is_file() else []
        member = next((h for h in fleet if h.name == host), None)
        layout = _layout(inventory_file, fleet, secrets_file, sops_config)
        location = _file_of(layout)
        plan = retire.RetirePlan(
            host,
            retire.device_hostname(member, host, base_dir),
            retire.read_host(inventory_file, member),
            keep_device=keep_device,
            recipient=recipient_per_host(layout, host)
            if isinstance(layout, PerHostSecrets)
            else retire.recipient_of(location, host),
        )
        plan.recorded, plan.others = retire.recorded_nodes(base_dir, host)
        on_headscale = None if keep_device else retire.headscale_nodes(plan, inventory_file, member, fleet)
        client = None if keep_device or on_headscale else retire.oauth_client(oauth_file)
        api = None if keep_device else retire.find_devices(plan, api_url, client, on_headscale=on_headscale)
    except (FleetError, mint.MintError) as error:
        raise click.ClickException(str(error)) from None
    if plan.nothing_to_do:
        if plan.recorded is not None and not keep_device:
            update_records(base_dir, {host: None})  # its device is gone: nothing is left to find
        click.echo(f"{host}: retired already: nothing to do")
        return
    for line in plan.lines():
        click.echo(line)
    if dry:
        return
    if not yes and not _confirmed(f"Retire {host}?"):
        click.echo("not confirmed: nothing was changed")
        sys.exit(1)
    click.echo("")
    ok = plan.device_problem is None
    if plan.on_host.unreachable is not None:
        click.echo(
            f"{host}: error: not reached ({plan.on_host.unreachable}): tailscale-autoconnect.nix, the secrets "
            f"file and the import were left in {paths.NIXOS_DIR}; run `tailnix retire {host}` again once it "
            "answers",
            err=True,
        )
        ok = False
    elif plan.on_host.work:
        result = retire.retire_on_host(inventory_file, host)
        if result.ok:
            done = ["logged out"] if plan.on_host.logged_in else []
            removed = plan.on_host.removal.describe() if plan.on_host.removal else []
            done += [f"removed {', '.join(removed)}"] if removed else []
            done += ["switched, and confirmed over a new SSH connection"] if result.switched else []
            click.echo(f"{host}: {'; '.join(done) or 'done'}")
        else:
            click.echo(f"{host}: error: {result.detail or 'the retire failed'}", err=True)
            for line in result.evidence:
                click.echo(f"  {line}", err=True)
            if plan.on_host.logged_in:
                click.echo(
                    f"{host}: its node may be logged out already; `tailnix deploy --limit {host}` logs it in "
                    f"again, `tailnix retire {host}` tries again",
                    err=True,
                )
            ok = False
    if plan.device_problem is not None:
        click.echo(f"tailnet: error: {plan.device_problem}", err=True)
    elif api is not None:
        said, deleted = retire.delete_devices(api, plan.devices)
        for line in said:
            click.echo(line, err=line.startswith("tailnet: error"))
        ok = ok and deleted
        if deleted and plan.recorded is not None:
            update_records(base_dir, {host: None})
    if plan.recipient is not None:
        try:
            _print_recipients(_forget(layout, host), location)
        except FleetError as error:
            click.echo(f"{location.sops_config.name}: error: {error}", err=True)
            ok = False
        if fleet and len(fleet) > 1 and not isinstance(layout, PerHostSecrets):
            click.echo("deploy afterwards (`tailnix deploy`) to give the other hosts the re-encrypted file")
    if member is not None:
        click.echo(f"note: {host} is still in {inventory_file}; remove it there, or its next deploy fails")
    if not ok:
        sys.exit(1)


def _read_new_key() -> str:
    if sys.stdin.isatty():
        text = click.prompt("New auth key", hide_input=True, confirmation_prompt=True)
    else:
        text = sys.stdin.read()
    return normalise_key(str(text))


@click.command("rotate-key")
@inventory_option
@limit_option
@click.option(
    "--expires",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The new key's expiry date (YYYY-MM-DD), as the admin console showed it.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=DEFAULT_KEY_DAYS,
    show_default=True,
    help="Days from today until the new key expires (when --expires is not given); with --mint, at most 90.",
)
@click.option(
    "--mint",
    "mint_key",
    is_flag=True,
    help=(
        "Mint the new key from the Tailscale API with an OAuth client ($TS_API_CLIENT_ID and "
        "$TS_API_CLIENT_SECRET, or --oauth-file) instead of reading it from stdin; for hosts with a "
        "tailscale_login_server, with `headscale preauthkeys create` on tailnix_headscale_host over SSH."
    ),
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="tag:NAME",
    help="With --mint: a tag of the new key (repeat for several); an OAuth client mints tagged keys only.",
)
@click.option(
    "--reusable/--single-use",
    default=True,
    show_default=True,
    help="With --mint: whether the key can join more than one host (a fleet needs a reusable one).",
)
@click.option("--ephemeral", is_flag=True, help="With --mint: hosts joined with the key are ephemeral.")
@oauth_options("With --mint: ")
@click.option(
    "--if-expiring-within",
    type=click.IntRange(0, 3650),
    metavar="DAYS",
    help=(
        "With --mint, for cron or CI: rotate only when the recorded expiry is DAYS days away or less "
        "(or passed, or not recorded); otherwise print how long the key has and exit 0."
    ),
)
@click.option("--no-deploy", is_flag=True, help="Write the new key only; do not deploy.")
@quiet_option
@sops_options
def rotate_key_command(
    inventory_file: Path,
    limits: tuple[str, ...],
    expires: Any,
    days: int,
    mint_key: bool,
    tags: tuple[str, ...],
    reusable: bool,
    ephemeral: bool,
    oauth_file: Path | None,
    api_url: str,
    if_expiring_within: int | None,
    no_deploy: bool,
    quiet: bool,
    secrets_file: Path | None,
    sops_config: Path | None,
) -> None:
    """Put a new Tailscale auth key in the secrets file, and deploy it.

    The key is read from stdin, or asked for without echo; never give it as an argument. With --mint it
    is minted from the Tailscale API instead, with an OAuth client. It is written with sops set, with its
    set and expiry dates in clear fields beside it (for `tailnix check`). Hosts that are already Running
    stay connected: only the secret changes, and they do not log in again.

    For a cron job or CI schedule, --mint --if-expiring-within DAYS does nothing while the key has more
    than DAYS days left. Exit 0: nothing to do, or rotated and deployed; 1: failed; 2: usage error.

    Example: tailnix rotate-key --days 90 < new-key.txt
    """
    if if_expiring_within is not None and not mint_key:
        raise click.UsageError(
            "--if-expiring-within goes with --mint: a job that runs unattended has no key to read from stdin"
        )
    if mint_key and expires is not None:
        raise click.UsageError("--expires is for a key made elsewhere; a minted key expires after --days")
    if not mint_key and (tags or oauth_file is not None or ephemeral or not reusable):
        raise click.UsageError("--tag, --single-use, --ephemeral and --oauth-file go with --mint")
    try:
        fleet = load_fleet(inventory_file)
        chosen = headscale.without_servers(_select(fleet, (), limits), fleet)
        layout = _layout(inventory_file, chosen, secrets_file, sops_config)
        location = _file_of(layout)
        server = headscale.headscale_server(chosen, fleet) if mint_key else None
        if if_expiring_within is not None:
            due = (
                headscale_rotation_due(
                    location,
                    server,
                    headscale.HeadscaleHost(inventory_file, server.host),
                    within_days=if_expiring_within,
                )
                if server is not None
                else rotation_due(location, within_days=if_expiring_within)
            )
            click.echo(due.message)
            if not due.due:
                return
        expiry: date | None
        if server is not None:
            if oauth_file is not None:
                raise click.UsageError(
                    f"--oauth-file is for Tailscale's API; these hosts log in to {server.login_server}"
                )
            minted = _mint_on_headscale(inventory_file, server, tags, days, reusable, ephemeral, quiet=quiet)
            key, expiry = minted.key, minted.expires
        elif mint_key:
            minted = _mint(tags, days, reusable, ephemeral, oauth_file, api_url, quiet=quiet)
            key, expiry = minted.key, minted.expires
        else:
            key = _read_new_key()
            expiry = _expiry_of(key, expires, days)
        created = not location.secrets_file.exists()
        if isinstance(layout, PerHostSecrets):
            rotation = rotate_per_host(layout, headscale.without_servers(fleet, fleet), key, expires=expiry)
            dates = rotation.dates
        else:
            rotation = None
            dates = rotate_key(location, key, expires=expiry)
    except (FleetError, AuthKeyError) as error:
        raise click.ClickException(str(error)) from None
    if quiet:
        pass
    elif dates.expires is None:
        done = "created with the new OAuth client secret" if created else "new OAuth client secret set"
        click.echo(f"{location.secrets_file}: {done} on {dates.set_on}; it does not expire")
    else:
        done = "created with the new auth key" if created else "new auth key set"
        click.echo(f"{location.secrets_file}: {done} on {dates.set_on}, expires on {dates.expires}")
    deploy_to = [h.name for h in chosen]
    if rotation is not None:
        assert isinstance(layout, PerHostSecrets)
        deploy_to = [name for name in deploy_to if name in rotation.written]
        _print_rotation(rotation, layout, quiet=quiet)
    if not no_deploy and not _deploy(inventory_file, deploy_to, quiet=quiet).ok:
        sys.exit(1)
    if rotation is not None and rotation.failed:
        sys.exit(1)


def _print_rotation(rotation: PerHostRotation, layout: PerHostSecrets, *, quiet: bool) -> None:
    """Which hosts' files have the new key, and what the hosts without one are to do."""
    if rotation.written and not quiet:
        click.echo(f"{layout.template}: the new key is in the own file of {_hosts(len(rotation.written))}")
    for name in rotation.without_recipient:
        if not quiet:
            click.echo(
                f"{name}: no recipient yet: `tailnix bootstrap {name}` gives it its own file, with this key"
            )
    for name, reason in rotation.failed.items():
        click.echo(f"{name}: error: its file still has the old key: {reason}", err=True)


def _expiry_of(key: str, expires: Any, days: int) -> date | None:
    """The recorded expiry of a key typed in: None for an OAuth client secret, which does not expire."""
    if key_kind(key) == "OAuth client secret":
        if expires is not None:
            raise AuthKeyError("an OAuth client secret does not expire; --expires is for an auth key")
        return None
    return expires.date() if expires is not None else date.today() + timedelta(days=days)


def _mint(
    tags: tuple[str, ...],
    days: int,
    reusable: bool,
    ephemeral: bool,
    oauth_file: Path | None,
    api_url: str,
    *,
    quiet: bool = False,
) -> mint.MintedKey:
    # Everything that can be checked here is checked before the client is even looked for.
    mint.check_request(tags, days)
    base_url = mint.check_base_url(api_url)
    client = _oauth_client(oauth_file)
    if client is None:
        raise mint.MintError(
            f"no OAuth client: set ${mint.CLIENT_ID_ENV} and ${mint.CLIENT_SECRET_ENV}, or give --oauth-file "
            f"(a sops file with {mint.CLIENT_ID_SECRET} and {mint.CLIENT_SECRET_SECRET}, for the admins only)"
        )
    minted = mint.mint_auth_key(
        base_url, client, tags=tags, expiry_days=days, reusable=reusable, ephemeral=ephemeral
    )
    kind = "reusable" if minted.reusable else "single-use"
    if not quiet:
        click.echo(
            f"minted auth key {minted.key_id} ({kind}, {', '.join(minted.tags)}) from {base_url} with the OAuth "
            f"client {client.client_id} ({client.source}); it expires on {minted.expires}"
        )
    return minted


def _mint_on_headscale(
    inventory_file: Path,
    server: headscale.HeadscaleServer,
    tags: tuple[str, ...],
    days: int,
    reusable: bool,
    ephemeral: bool,
    *,
    quiet: bool = False,
) -> mint.MintedKey:
    minted = headscale.mint_headscale_key(
        server,
        headscale.HeadscaleHost(inventory_file, server.host),
        tags=tags,
        expiry_days=days,
        reusable=reusable,
        ephemeral=ephemeral,
    )
    if not quiet:
        kind = "reusable" if minted.reusable else "single-use"
        described = ", ".join((kind, *minted.tags))
        click.echo(
            f"minted pre-auth key {minted.key_id} ({described}) of the headscale user {server.user} on "
            f"{server.host} for {server.login_server}; it expires on {minted.expires}"
        )
    return minted


def _oauth_client(oauth_file: Path | None) -> mint.OAuthClient | None:
    """The OAuth client in the environment, or else in --oauth-file; None when neither gives one."""
    client = mint.client_from_environment()
    if client is None and oauth_file is not None:
        client = mint.client_from_sops_file(oauth_file)
    return client


_LEVEL_WORDS = {OK: "ok", WARNING: "warning", BROKEN: "error"}


@click.command("check")
@inventory_option
@limit_option
@warn_days_option("Warn this many days ahead.")
@click.option(
    "--hosts",
    "read_hosts",
    is_flag=True,
    help="Also read each host over SSH (as status does) and warn on node keys that expire within --warn-days.",
)
@sops_options
def check_command(
    inventory_file: Path,
    limits: tuple[str, ...],
    warn_days: int,
    read_hosts: bool,
    secrets_file: Path | None,
    sops_config: Path | None,
) -> None:
    """Check the secrets file locally, for a cron job or CI: exit 0 fine, 1 warning, 2 expired or broken.

    Checks that the auth key has not expired (warns --warn-days before), that every inventory host's
    recorded recipient can open the file, and that git tracks no secret in clear. Needs no key and
    no SSH.

    Example: tailnix check --warn-days 30
    """
    try:
        chosen = _fleet(inventory_file, (), limits)
        layout = _layout(inventory_file, chosen, secrets_file, sops_config)
    except FleetError as error:
        raise CannotRun(str(error)) from None
    findings: list[Finding]
    if isinstance(layout, PerHostSecrets):
        findings = check_per_host(layout, chosen, warn_days=warn_days)
    else:
        findings = check_expiry(layout, warn_days=warn_days)
        findings += check_no_oauth_client(layout)
        findings += check_recipients(layout, chosen)
    findings += check_git(_file_of(layout))
    if read_hosts:
        findings += node_key_findings(fleet_status(inventory_file, chosen, warn_days=warn_days), warn_days)
    for finding in findings:
        click.echo(f"{_LEVEL_WORDS[finding.level]}: {finding.message}", err=finding.level != OK)
    sys.exit(max(finding.level for finding in findings))


@click.command("deploy")
@inventory_option
@limit_option
@click.option("--dry", is_flag=True, help="Show what would change on each host; change nothing.")
@click.option("--batch", type=click.IntRange(1), help="Deploy N hosts at a time (rolling).")
@click.option(
    "--fail-percent",
    type=click.IntRange(0, 100),
    help="Stop before the next batch when more than P% of the hosts so far failed (default: any failure).",
)
@quiet_option
@oauth_options("For tailscale_key_expiry = False (when the environment has no OAuth client): ")
def deploy_command(
    inventory_file: Path,
    limits: tuple[str, ...],
    dry: bool,
    batch: int | None,
    fail_percent: int | None,
    quiet: bool,
    oauth_file: Path | None,
    api_url: str,
) -> None:
    """Run the deploy (deploys/tailscale.py) on the fleet: its progress per host, then a summary table.

    Each host gets a line when it starts a step that takes time (`desk: nixos-rebuild switch ...`) and
    one when it has ended, with the reason when it failed; --quiet keeps only the failures and the
    summary's last line.

    Then, for hosts with tailscale_key_expiry = False whose node key still expires, it disables that
    expiry through the Tailscale API with the OAuth client of $TS_API_CLIENT_ID and
    $TS_API_CLIENT_SECRET (or --oauth-file), from this machine; without a client such a host fails
    with what is needed.

    Example: tailnix deploy --limit routers --batch 2
    """
    try:
        fleet = _fleet(inventory_file, (), limits)
        chosen = [h.name for h in fleet]
        if dry:
            planned = dry_run(inventory_file, chosen)
            devices = read_expiring_devices(inventory_file, fleet)
            for host in [*devices.expiring, *devices.unread]:
                planned.setdefault(host, []).append(KEY_EXPIRY_CHANGE)
            for host, routes in read_unapproved(inventory_file, fleet).items():
                planned.setdefault(host, []).append(approval_change(routes))
            for host, routes in read_withdrawals(inventory_file, fleet).items():
                planned.setdefault(host, []).append(withdrawal_change(routes))
            for replacement in replace_offline_devices(
                inventory_file,
                fleet,
                find_client=lambda: _oauth_client(oauth_file),
                base_url=_api_base(api_url),
                dry=True,
            ):
                planned.setdefault(replacement.host, []).insert(0, replacement.message)
            for retag in retag_on_headscale(inventory_file, fleet, dry=True):
                # Run before the deploy, the retag leaves the host nothing to refuse.
                planned[retag.host] = [f"{steps.RETAG}: {retag.message}"] + [
                    change for change in planned.get(retag.host, []) if "headscale nodes tag" not in change
                ]
            for host, changes in planned.items():
                click.echo(f"{host}: {'; '.join(changes) if changes else 'nothing to do'}")
            return
    except FleetError as error:
        raise click.ClickException(str(error)) from None
    if not chosen:
        raise click.ClickException(f"no hosts in {inventory_file}")
    deployed = _deploy(
        inventory_file,
        chosen,
        batch=batch,
        fail_percent=fail_percent,
        quiet=quiet,
        oauth_file=oauth_file,
        api_url=api_url,
    )
    if not deployed.ok:
        sys.exit(1)


@click.command("status")
@inventory_option
@limit_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the documented JSON document instead of a table."
)
@warn_days_option("Warn when a node key expires within this many days.")
def status_command(inventory_file: Path, limits: tuple[str, ...], as_json: bool, warn_days: int) -> None:
    """Show each host's NixOS version, Tailscale state, IPs, tags, node key expiry and last switch, and the mesh.

    Exit 0 when every host is Running with the current module and sees every other joined fleet host as
    an Online peer; 1 otherwise; 2 when the status cannot be read. A node key that expires within
    --warn-days is a warning, not a failure.

    Example: tailnix status --json
    """
    try:
        chosen = _fleet(inventory_file, (), limits)
    except FleetError as error:
        raise CannotRun(str(error)) from None
    document = fleet_status(inventory_file, chosen, warn_days=warn_days)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        rows = [("HOST", "NIXOS", "STATE", "IPV4", "TAGS", "MODULE", "LAST SWITCH", "NODE KEY EXPIRY")]
        for host in document["hosts"]:
            module = {True: "current", False: "stale", None: "?"}[host["module_current"]]
            rows.append(
                (
                    host["name"],
                    host["nixos_version"] or "-",
                    host["backend_state"] or "-",
                    (host["tailscale_ips"] or ["-"])[0],
                    ",".join(host["tags"]) or "-",
                    module,
                    host["last_switch"] or "-",
                    _node_key_expiry_cell(host),
                )
            )
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo(
                "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )
        for host in document["hosts"]:
            for problem in host["problems"]:
                click.echo(f"{host['name']}: {problem}", err=True)
            for warning in host["warnings"]:
                click.echo(f"{host['name']}: warning: {warning}", err=True)
            if host["drift"]:
                click.echo(f"{host['name']}: {status_sentence(host['drift'])}", err=True)
        healthy = sum(host["healthy"] for host in document["hosts"])
        total, members = len(document["hosts"]), len(document["mesh"]["members"])
        # The mesh is complete only when every host is in it, not merely when the Running ones agree.
        if members < total:
            mesh = f"mesh incomplete: {members} of {total} hosts on the tailnet"
        elif document["mesh"]["ok"]:
            mesh = "mesh complete"
        else:
            mesh = "mesh incomplete: see above"
        click.echo(f"\n{healthy} of {total} hosts healthy; {mesh}")
    sys.exit(0 if document["healthy"] else 1)


def _node_key_expiry_cell(host: dict[str, Any]) -> str:
    # A Running node without Self.KeyExpiry is a device whose key expiry is disabled.
    if host["node_key_expiry"]:
        return str(host["node_key_expiry"])
    return "never" if host["backend_state"] == "Running" else "-"
