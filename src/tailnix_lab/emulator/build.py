"""What building the system does beyond evaluating it: the checkPhases of the derivations NixOS builds.

A lab host builds nothing into a store, but the checks that real builds run are the lab's too, so a
configuration real NixOS cannot build fails here at the same step (`nixos-rebuild` exit 1, nothing
activated):

- every unit script is checked with `bash -n -O extglob` (trivial-builders' `writeShellScriptBin`,
  `stdenv.shellDryRun`), and with `enableStrictShellChecks` also with `shellcheck`
  (`writeShellApplication`), as nixos/lib/systemd-lib.nix `makeJobScript` builds them;
- the sops-nix manifest runs `sops-install-secrets -check-mode=sopsfile` (sops-nix
  modules/sops/manifest-for.nix): every secret's sops file parses in its format, and the key of a
  yaml or json secret is present (pkgs/sops-install-secrets/main.go `loadSopsFile`, `validateSopsFile`).

A failure reads as Nix reports a failed builder: the derivation, its exit code, and its last log lines.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tailnix_lab.emulator import units
from tailnix_lab.emulator.activation import config_path_on_host, secret_key_problem

SHELLCHECK = "shellcheck"
SOPS_INSTALL_SECRETS = "/nix/store/{hash}-sops-install-secrets-0.0.1/bin/sops-install-secrets"
DOTENV_LINE = re.compile(r"^\s*(export\s+)?[A-Za-z_][A-Za-z0-9_.]*\s*[=:]")


class BuildError(Exception):
    """A derivation's builder failed; the message is Nix's report of it."""


def store_hash(*parts: str) -> str:
    """A store-path-like hash (32 characters of Nix's base32 alphabet) for a derivation's inputs."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
    return "".join(alphabet[b % 32] for b in digest[:32])


def failed_builder(name: str, code: int, log: str, *inputs: str) -> BuildError:
    """Nix's words for a builder that exited non-zero."""
    drv = f"/nix/store/{store_hash(name, *inputs)}-{name}.drv"
    lines = [line for line in log.rstrip("\n").splitlines()][-25:]
    shown = "\n".join(f"       > {line}" for line in lines)
    return BuildError(
        f"error: builder for '{drv}' failed with exit code {code};\n"
        f"       last {len(lines)} log lines:\n{shown}\n"
        f"       For full logs, run:\n         nix log {drv}\n"
        "error: 1 dependencies of derivation failed to build"
    )


def check(configuration: dict[str, Any]) -> None:
    """Run the checks a build of the configuration runs; raise BuildError on the first failure."""
    check_unit_scripts(configuration)
    check_sops_files(configuration)


def check_unit_scripts(configuration: dict[str, Any]) -> None:
    """`bash -n` (and shellcheck for strict units) on every job script, as their derivations do."""
    services = (configuration.get("systemd") or {}).get("services") or {}
    with tempfile.TemporaryDirectory(prefix="tailnix-lab-build.") as scratch:
        for name, definition in sorted(services.items()):
            if not definition.get("enable", True):
                continue
            strict = bool(definition.get("enableStrictShellChecks"))
            for suffix, option in units.JOB_SCRIPTS.items():
                text = str(definition.get(option) or "")
                if not text:
                    continue
                _check_script(Path(scratch), units.job_script_name(name, suffix), text, strict)


def _check_script(scratch: Path, script_name: str, text: str, strict: bool) -> None:
    content = units.job_script(text, strict)
    derivation = f"unit-script-{script_name}"
    out = f"{store_hash(derivation, content)}-{derivation}"
    target = scratch / out / "bin" / script_name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    store_target = f"/nix/store/{out}/bin/{script_name}"
    checks = [["bash", "-n", "-O", "extglob", str(target)]]
    if strict:
        checks.append([SHELLCHECK, str(target)])
    for command in checks:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = (done.stdout + done.stderr).replace(str(target), store_target)
            raise failed_builder(derivation, done.returncode, log, content)


# -- sops-nix ---------------------------------------------------------------------------------------


def check_sops_files(configuration: dict[str, Any]) -> None:
    """`sops-install-secrets -check-mode=sopsfile manifest.json`, as the manifest's checkPhase runs it."""
    sops = configuration.get("sops")
    if not sops or not sops.get("secrets") or not sops.get("validateSopsFiles", True):
        return
    loaded: dict[str, tuple[str, str, Any]] = {}
    for name, secret in sorted(sops["secrets"].items()):
        try:
            _validate_secret(name, secret, loaded)
        except ValueError as err:
            tool = SOPS_INSTALL_SECRETS.format(hash=store_hash("sops-install-secrets"))
            raise failed_builder(
                "manifest.json", 1, f"{tool}: {err}", json.dumps(sops, sort_keys=True)
            ) from None


def _validate_secret(name: str, secret: dict[str, Any], loaded: dict[str, tuple[str, str, Any]]) -> None:
    """One secret: its file parses in its format (once per file), and a yaml/json key is there."""
    sops_file = str(secret["sopsFile"])
    file_format = str(secret.get("format") or "yaml")
    secret_name = str(secret.get("name") or name)
    if sops_file not in loaded:
        try:
            text = config_path_on_host(sops_file).read_text()
        except OSError as err:
            raise ValueError(
                f"failed reading {sops_file}: open {sops_file}: {(err.strerror or '').lower()}"
            ) from err
        loaded[sops_file] = (file_format, secret_name, _parse(sops_file, file_format, text))
    first_format, first_name, keys = loaded[sops_file]
    if first_format != file_format:
        raise ValueError(
            f"secret {secret_name} defined the format of {sops_file} as {file_format}, but it was specified"
            f" as {first_format} in {first_name} before"
        )
    key = str(secret.get("key") if secret.get("key") is not None else name)
    if file_format in ("yaml", "json") and key != "":
        missing = secret_key_problem(keys, key)
        if missing:
            raise ValueError(f"secret {secret_name} in {sops_file} is not valid: {missing}")


def _parse(sops_file: str, file_format: str, text: str) -> Any:
    """The (still encrypted) file as its format reads it; ValueError in sops-install-secrets' words."""
    if file_format in ("json", "binary"):
        try:
            return json.loads(text)
        except ValueError as err:
            raise ValueError(f"cannot parse json of '{sops_file}': {err}") from err
    if file_format == "yaml":
        yaml = _yaml_module()
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"cannot parse yaml of '{sops_file}': yaml: {err}") from err
    if file_format == "dotenv":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#") and not DOTENV_LINE.match(line):
                raise ValueError(f"cannot parse dotenv of '{sops_file}': line {number}: unexpected character")
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text if text.lstrip().startswith("[") else "[DEFAULT]\n" + text)
    except configparser.Error as err:
        raise ValueError(f"cannot parse ini of '{sops_file}': {err}") from err
    return None


def _yaml_module() -> Any:
    """PyYAML from the machine's Python (Debian's python3-yaml); the emulators may run without site."""
    try:
        import yaml
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        import yaml
    return yaml
