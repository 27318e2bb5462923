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
from tailnix.settings import DEFAULT_SECRETS_FILE, TailscaleSettings, parse_settings, redact_secrets
from tailnix.skeleton import ADMIN_PLACEHOLDER, MAKE_AGE_KEY, fleet_files
from tailnix.sops import encrypt_values
from tailnix.sops_config import SopsConfig

from .agekeys import new_age_identity

REPOSITORY = Path(__file__).resolve().parents[2]
WRITTEN = [
    "inventory.py",
    "group_data/all.py",
    "deploys/tailscale.py",
    "config.py",
    ".sops.yaml",
    "secrets/.gitkeep",
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
    assert parse_settings("desk", data) == parse_settings("desk", {})
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
    """Once the admin key replaces the placeholder, bootstrap's editor and the real sops accept the file."""
    key_file, admin = new_age_identity(tmp_path)
    _, host = new_age_identity(tmp_path, "desk.agekey")
    written = {item.path: item.text for item in fleet_files()}
    assert ADMIN_PLACEHOLDER in written[".sops.yaml"]
    text = written[".sops.yaml"].replace(ADMIN_PLACEHOLDER, admin)
    text = SopsConfig(text, DEFAULT_SECRETS_FILE).with_recipient("desk", host)
    rule = yaml.safe_load(text)["creation_rules"]
    assert [group["age"] for group in rule[0]["key_groups"]] == [[admin, host]]
    config = tmp_path / ".sops.yaml"
    config.write_text(text)
    target = tmp_path / DEFAULT_SECRETS_FILE
    target.parent.mkdir()
    encrypt_values(
        {"tailscale_auth_key": "tskey-auth-k1-x"}, target=target, config=config, age_key_file=key_file
    )
    recipients = {entry["recipient"] for entry in yaml.safe_load(target.read_text())["sops"]["age"]}
    assert recipients == {admin, host}


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    code, output = init(str(tmp_path))
    assert code == 1
    assert f"{tmp_path} is not empty (notes.txt)" in output and "--force" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_git_repository_with_nothing_else_counts_as_empty(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    code, output = init(str(tmp_path))
    assert code == 0, output
    assert (tmp_path / "inventory.py").is_file()


def test_force_adds_the_missing_files_and_keeps_the_users(tmp_path: Path) -> None:
    assert init(str(tmp_path))[0] == 0
    (tmp_path / "inventory.py").write_text("desk = ['desk.lan']\n")
    (tmp_path / "README.md").unlink()
    code, output = init(str(tmp_path), "--force")
    assert code == 0, output
    assert (tmp_path / "inventory.py").read_text() == "desk = ['desk.lan']\n"
    assert (
        f"kept {tmp_path / 'inventory.py'}: it was there already, with other content; not overwritten"
        in output
    )
    assert f"wrote {tmp_path / 'README.md'}" in output
    assert f"unchanged {tmp_path / 'config.py'}" in output


def test_init_names_a_directory_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "fleet"
    target.write_text("")
    code, output = init(str(target))
    assert code == 1
    assert f"{target} is a file, not a directory: give a new or empty directory" in output


def test_init_names_the_file_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "group_data").write_text("")  # a file where the directory goes
    code, output = init(str(tmp_path), "--force")
    assert code == 1
    assert f"cannot write {tmp_path / 'group_data' / 'all.py'}: " in output
