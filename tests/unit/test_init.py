"""`tailnix init`: the fleet repository it writes, what it refuses, and the files it must not touch."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tailnix.authkey import SECRETS_IN_CLEAR
from tailnix.cli import main
from tailnix.settings import (
    DEFAULT_SECRETS_FILE,
    PER_HOST_SECRETS_FILE,
    TailscaleSettings,
    parse_settings,
    redact_secrets,
)
from tailnix.skeleton import ADMIN_PLACEHOLDER, MAKE_AGE_KEY, fleet_files
from tailnix.sops import encrypt_values
from tailnix.sops_config import HostRules

from .agekeys import new_age_identity

REPOSITORY = Path(__file__).resolve().parents[2]
WRITTEN = [
    "inventory.py",
    "group_data/all.py",
    "deploys/tailscale.py",
    "config.py",
    ".sops.yaml",
    "secrets/hosts/.gitkeep",
    ".gitignore",
    "README.md",
]


@pytest.fixture(autouse=True)
def own_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """init makes the admin age key where sops looks for it: in a home of the test's own (not in
    tmp_path, which the tests init into)."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for name in ("XDG_CONFIG_HOME", "SOPS_AGE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


def init(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["init", *arguments])
    return result.exit_code, result.output


def test_init_writes_the_fleet_and_says_what_next(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    code, output = init(str(fleet))
    assert code == 0, output
    assert sorted(str(p.relative_to(fleet)) for p in fleet.rglob("*") if p.is_file()) == sorted(WRITTEN)
    for name in WRITTEN:
        assert f"wrote {fleet / name}" in output
    assert f"cd {fleet} && tailnix rotate-key --no-deploy" in output


def test_the_repository_is_what_init_writes() -> None:
    """The repository's own config.py, deploy file and fleet defaults are the templates, not copies of them."""
    written = {item.path: item.text for item in fleet_files()}
    for name in ("config.py", "deploys/tailscale.py", "group_data/all.py"):
        assert (REPOSITORY / name).read_text() == written[name], (
            f"{name} differs from what tailnix init writes"
        )
    assert (REPOSITORY / "src/tailnix/deploys/tailscale.py").read_text() == written["deploys/tailscale.py"]


def test_the_deploy_file_imports_only_tailnix() -> None:
    written = {item.path: item.text for item in fleet_files()}
    imports = re.findall(r"^(?:from|import) (\S+)", written["deploys/tailscale.py"], re.MULTILINE)
    assert imports and all(name.split(".")[0] == "tailnix" for name in imports)


def test_group_data_holds_the_settings_defaults() -> None:
    written = {item.path: item.text for item in fleet_files()}
    values: dict[str, object] = {}
    exec(compile(written["group_data/all.py"], "group_data/all.py", "exec"), values)
    data = {key: value for key, value in values.items() if not key.startswith("__")}
    assert data, "it sets the defaults"
    # The defaults, but for the secrets: a new fleet has one file per host.
    assert parse_settings("desk", data) == parse_settings(
        "desk", {"tailnix_secrets_file": PER_HOST_SECRETS_FILE}
    )
    assert parse_settings("desk", data).secrets_file == Path.cwd() / "secrets" / "hosts" / "desk.yaml"
    assert parse_settings("desk", {}) == TailscaleSettings(
        host="desk", secrets_file=Path.cwd() / DEFAULT_SECRETS_FILE
    )


def test_the_fleet_checks_host_keys_against_its_own_file_and_never_trusts_one_silently() -> None:
    """pyinfra's default (`accept-new`) would add a new host's key without a word: the fleet checks keys
    strictly against `known_hosts` beside the inventory, where `tailnix bootstrap` records confirmed ones."""
    written = {item.path: item.text for item in fleet_files()}
    values: dict[str, object] = {}
    exec(compile(written["group_data/all.py"], "group_data/all.py", "exec"), values)
    assert values["ssh_known_hosts_file"] == "known_hosts"
    assert values["ssh_strict_host_key_checking"] == "yes"


def test_the_inventory_lists_no_host_until_the_user_does() -> None:
    written = {item.path: item.text for item in fleet_files()}
    values: dict[str, object] = {}
    exec(compile(written["inventory.py"], "inventory.py", "exec"), values)
    assert [key for key in values if not key.startswith("__")] == []
    assert "# workstations = [" in written["inventory.py"]


def test_no_file_holds_a_secret() -> None:
    for item in fleet_files():
        for what, pattern in SECRETS_IN_CLEAR.items():
            assert not re.search(pattern, item.text), f"{item.path} holds {what}"
        assert redact_secrets(item.text) == item.text, item.path


def test_the_age_key_command_in_the_sops_rules_works_in_a_new_home(tmp_path: Path) -> None:
    # age-keygen -o alone fails when ~/.config/sops/age does not exist yet, as on a new machine.
    written = {item.path: item.text for item in fleet_files()}
    assert f"#      {MAKE_AGE_KEY}\n" in written[".sops.yaml"]
    subprocess.run(["sh", "-c", MAKE_AGE_KEY], env={**os.environ, "HOME": str(tmp_path)}, check=True)
    assert (tmp_path / ".config/sops/age/keys.txt").read_text().count("AGE-SECRET-KEY-") == 1


def test_the_sops_rules_take_the_admin_and_hosts_and_encrypt(tmp_path: Path) -> None:
    """Once the admin key replaces the placeholder, bootstrap's editor and the real sops accept the file:
    the admins' copy is for the admin alone, a host's file for the admin and that host."""
    key_file, admin = new_age_identity(tmp_path)
    _, host = new_age_identity(tmp_path, "desk.agekey")
    written = {item.path: item.text for item in fleet_files()}
    assert ADMIN_PLACEHOLDER in written[".sops.yaml"]
    text = written[".sops.yaml"].replace(ADMIN_PLACEHOLDER, admin)
    text = HostRules(text, "secrets/hosts/admins.yaml").with_host("secrets/hosts/desk.yaml", "desk", host)
    config = tmp_path / ".sops.yaml"
    config.write_text(text)
    (tmp_path / "secrets" / "hosts").mkdir(parents=True)
    for name, wanted in (("admins", {admin}), ("desk", {admin, host})):
        target = tmp_path / "secrets" / "hosts" / f"{name}.yaml"
        encrypt_values(
            {"tailscale_auth_key": "tskey-auth-k1-x"}, target=target, config=config, age_key_file=key_file
        )
        recipients = {entry["recipient"] for entry in yaml.safe_load(target.read_text())["sops"]["age"]}
        assert recipients == wanted, name
