"""What one host should receive, computed on the workstation before any host is touched."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import gevent.lock
from pyinfra import logger

from tailnix import paths
from tailnix.keyform import key_problem, oauth_defaults_warning
from tailnix.nixmodule import render_module
from tailnix.secrets_file import KEY_EXPIRY_WARNING_DAYS, missing_file, read_sealed, recorded_expiry
from tailnix.settings import ADMIN_COPY_NAME, SettingsError, TailscaleSettings, host_file, parse_settings
from tailnix.sops import NotEncryptedError, SopsError, SopsMetadata, decrypt_value


@dataclass(frozen=True)
class ModuleFile:
    """One rendering of the host's module."""

    text: str
    sha256: str

    @classmethod
    def of(cls, text: str) -> ModuleFile:
        return _module_file(text)


@cache
def _module_file(text: str) -> ModuleFile:
    # Hosts with the same settings get the same module: the fleet holds one copy of each text (two 6 KB
    # texts per host were the largest part of a redeploy's memory beyond the bare pyinfra run's).
    return ModuleFile(text, hashlib.sha256(text.encode()).hexdigest())


@dataclass(frozen=True)
class HostPlan:
    """A host's settings and the exact files it should end up with."""

    settings: TailscaleSettings
    secrets: SopsMetadata
    secrets_sha256: str
    module: ModuleFile
    """The module, fetching its own sops-nix."""
    module_for_sops_nix_flake: ModuleFile
    """The module for a flake host whose flake already brings sops-nix."""
    key_expires: date | None = None
    """The auth key's expiry as recorded beside it in the secrets file."""

    def key_expired(self, today: date | None = None) -> bool:
        """Whether the recorded expiry of the key has passed: a host that must log in cannot."""
        return self.key_expires is not None and self.key_expires < (today or date.today())

    def module_for(self, *, sops_nix_from_flake: bool) -> ModuleFile:
        """The module this host gets, given where its sops-nix comes from."""
        return self.module_for_sops_nix_flake if sops_nix_from_flake else self.module

    def fingerprint_for(self, module: ModuleFile) -> str:
        """What a successful switch with this plan has applied; kept on the host after the switch."""
        applied = f"secret {self.secrets_sha256}\nmodule {module.sha256}\nimport {paths.MODULE_IMPORT}\n"
        return hashlib.sha256(applied.encode()).hexdigest()

    @property
    def fingerprint(self) -> str:
        """The fingerprint for a host that fetches its own sops-nix (every host but some flake hosts)."""
        return self.fingerprint_for(self.module)


_DECRYPTING = gevent.lock.Semaphore()
"""pyinfra prepares the hosts in greenlets, and sops runs in a subprocess that yields to them: without this
lock, every host that begins before the first sops has ended runs sops too (20 of 20 hosts did)."""


def _decrypted_secret(path: Path, secret_name: str) -> str | None:
    with _DECRYPTING:
        return _decrypt_once(path, secret_name)


@cache
def _decrypt_once(path: Path, secret_name: str) -> str | None:
    # Once per run and file. The plaintext stays in this process: it is only looked at, never sent.
    try:
        return decrypt_value(path, secret_name)
    except SopsError:
        logger.warning(
            f"The form of the auth key in {path} was not checked: no age key here opens it (sops looks in "
            "SOPS_AGE_KEY_FILE and ~/.config/sops/age/keys.txt)."
        )
        return None


@cache
def _warn_once(message: str) -> None:
    logger.warning(message)


@cache
def _warn_expiry(path: Path, expires: date, today: date) -> None:
    left = (expires - today).days
    if left < 0:
        logger.warning(
            f"The auth key in {path} expired on {expires}: hosts that are Running stay on the tailnet, but "
            "no host can log in with it; run `tailnix rotate-key`."
        )
    elif left <= KEY_EXPIRY_WARNING_DAYS:
        logger.warning(
            f"The auth key in {path} expires on {expires}, in {left} days; run `tailnix rotate-key`."
        )


@cache
def _secrets_file(path: Path, secret_name: str) -> tuple[SopsMetadata, str]:
    # Read once per run, whatever the number of hosts sharing the file.
    metadata = read_sealed(path, secret_name)
    return metadata, hashlib.sha256(path.read_bytes()).hexdigest()


def _key_source(settings: TailscaleSettings) -> Path:
    """The file whose key's form is checked: in a per-host layout the admins' copy, which every host's file
    is written from, so that a run decrypts one file and not one per host."""
    if settings.secrets_template is not None:
        admin_copy = host_file(settings.secrets_template, ADMIN_COPY_NAME)
        if admin_copy.is_file():
            return admin_copy
    return settings.secrets_file


def plan_host(host: str, data: Mapping[str, Any], *, base_dir: Path | None = None) -> HostPlan:
    """Validate a host's settings and its local secrets file, and render its module.

    Raises SettingsError (a pyinfra DeployError: the run stops before any host is changed) with a
    message naming the host, the setting and the value.
    """
    settings = parse_settings(host, data, base_dir=base_dir)
    secrets_path = settings.secrets_file
    if not secrets_path.is_file():
        missing = missing_file(secrets_path)
        if settings.secrets_template is not None:
            missing = (
                f"{secrets_path}, this host's own secrets file, does not exist: `tailnix bootstrap {host}` "
                "records its recipient and creates it with the current key"
            )
        raise SettingsError(f"host {host}: tailnix_secrets_file = {str(secrets_path)!r}: {missing}")
    try:
        metadata, secrets_sha256 = _secrets_file(secrets_path, settings.secret_name)
    except NotEncryptedError as error:
        raise SettingsError(f"host {host}: refusing to upload {secrets_path}: {error}") from None
    if settings.secret_name not in metadata.keys:
        present = ", ".join(k for k in metadata.keys) or "none"
        raise SettingsError(
            f"host {host}: {secrets_path} has no key {settings.secret_name!r} "
            f"(keys: {present}); set tailnix_secret_name or add the key with `sops set`"
        )
    if not metadata.recipients:
        raise SettingsError(f"host {host}: {secrets_path} is encrypted for no age recipient")
    if metadata.key_groups > 1:
        raise SettingsError(
            f"host {host}: {secrets_path} is encrypted with {metadata.key_groups} key groups, so a host needs a "
            "key from every group and sops-nix fails; put all recipients in ONE key group in .sops.yaml "
            f"and run `sops updatekeys -y {secrets_path}`"
        )
    source = _key_source(settings)
    secret = _decrypted_secret(source, settings.secret_name)
    problem = key_problem(secret, settings) if secret is not None else None
    if problem is not None:
        raise SettingsError(f"host {host}: the secret {settings.secret_name!r} in {source} {problem}")
    defaults = oauth_defaults_warning(secret) if secret is not None else None
    if defaults is not None:
        _warn_once(f"The secret {settings.secret_name!r} in {source} {defaults}.")
    expires = recorded_expiry(metadata, settings.secret_name)
    if expires is not None:
        _warn_expiry(secrets_path, expires, date.today())
    return HostPlan(
        key_expires=expires,
        settings=settings,
        secrets=metadata,
        secrets_sha256=secrets_sha256,
        module=ModuleFile.of(render_module(settings)),
        module_for_sops_nix_flake=ModuleFile.of(render_module(settings, sops_nix_from_flake=True)),
    )
