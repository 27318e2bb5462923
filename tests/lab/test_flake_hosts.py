"""Flake hosts: the emulated `nixos-rebuild --flake` on a tmp host root, and a lab flake host over SSH."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tailnix.agekey import ssh_public_key_to_age
from tailnix_lab import stock
from tailnix_lab.hosts import Lab, write_flake_files

from .tmphost import SRC, emulator_env, encrypt_yaml

STANDIN = SRC / "tailnix_lab" / "emulator" / "sops-nix-standin"
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0dNNO1Vt5lMm4Fv8dZ3Sx0lJmc7x2i2iLoVlQy9Emx"
HOSTNAME = "nixos-1"
PROFILES = "/var/lib/tailnix-lab/profiles"


@dataclass
class FlakeHost:
    """A lab host's root in a tmp dir whose `/etc/nixos` is a flake."""

    root: Path
    control: Path

    def rebuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = emulator_env(self.root, self.control, with_sops=True)
        return subprocess.run(
            ["/usr/bin/python3", "-m", "tailnix_lab.emulator.nixos_rebuild", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    @property
    def etc_nixos(self) -> Path:
        return self.path("/etc/nixos")

    def write(self, host_path: str, text: str) -> Path:
        path = self.path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.etc_nixos), *args], capture_output=True, text=True, check=True
        ).stdout

    def generation_config(self, number: int = 1) -> dict[str, object]:
        generation = self.path(f"{PROFILES}/system-{number}-link/configuration.json")
        config: dict[str, object] = json.loads(generation.read_text())["config"]
        return config

    def import_in_configuration(self, file_name: str) -> None:
        """Import another file from configuration.nix, as the deploy does."""
        configuration = self.etc_nixos / "configuration.nix"
        text = configuration.read_text()
        configuration.write_text(
            text.replace(
                "./hardware-configuration.nix\n", f"./hardware-configuration.nix\n      ./{file_name}\n"
            )
        )


def make_flake_host(tmp_path: Path, style: str = "stock", git: bool = False) -> FlakeHost:
    host = FlakeHost(root=tmp_path / "root", control=tmp_path / "control")
    host.write("/etc/hostname", HOSTNAME + "\n")
    host.write("/etc/nixos/configuration.nix", stock.configuration_nix(HOSTNAME, ADMIN_KEY))
    host.write("/etc/nixos/hardware-configuration.nix", stock.hardware_configuration_nix(HOSTNAME))
    write_flake_files(host.etc_nixos, HOSTNAME, ADMIN_KEY, style, git)
    return host


@pytest.fixture
def flake_host(tmp_path: Path) -> FlakeHost:
    return make_flake_host(tmp_path)


@pytest.fixture
def git_flake_host(tmp_path: Path) -> FlakeHost:
    return make_flake_host(tmp_path, git=True)


def test_stock_flake_switches_with_flake_attribute(flake_host: FlakeHost) -> None:
    lock_before = (flake_host.etc_nixos / "flake.lock").read_bytes()
    done = flake_host.rebuild("switch", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 0, done.stderr
    config = flake_host.generation_config()
    assert config["networking"]["hostName"] == HOSTNAME  # type: ignore[index]
    assert config["services"]["openssh"]["enable"] is True  # type: ignore[index]
    assert os.readlink(flake_host.path("/run/current-system")).endswith("system-1-link")
    assert (flake_host.etc_nixos / "flake.lock").read_bytes() == lock_before


def test_flake_without_attribute_and_without_flag_mean_the_host_name(flake_host: FlakeHost) -> None:
    assert flake_host.rebuild("build", "--flake", "/etc/nixos").returncode == 0
    # With /etc/nixos/flake.nix present, nixos-rebuild uses the flake by itself.
    flake_host.write("/etc/nixos/extra.nix", "{ services.tailscal.enable = true; }\n")
    flake_host.import_in_configuration("extra.nix")
    done = flake_host.rebuild("build")
    assert done.returncode == 1
    assert "The option `services.tailscal' does not exist." in done.stderr


def test_unknown_attribute_fails_naming_it(flake_host: FlakeHost) -> None:
    done = flake_host.rebuild("switch", "--flake", "/etc/nixos#elsewhere")
    assert done.returncode == 1
    assert "does not provide attribute" in done.stderr
    assert "'nixosConfigurations.\"elsewhere\".config.system.build.toplevel'" in done.stderr
    assert not flake_host.path(PROFILES).exists()


def test_git_flake_refuses_untracked_import_until_intent_to_add(git_flake_host: FlakeHost) -> None:
    host = git_flake_host
    host.write("/etc/nixos/tailscale-autoconnect.nix", "{ services.tailscale.enable = true; }\n")
    host.import_in_configuration("tailscale-autoconnect.nix")

    done = host.rebuild("switch", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 1
    assert "warning: Git tree" in done.stderr and "is dirty" in done.stderr
    assert "-source/tailscale-autoconnect.nix' does not exist" in done.stderr
    assert not host.path(PROFILES).exists()

    host.git("add", "--intent-to-add", "tailscale-autoconnect.nix")
    done = host.rebuild("switch", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 0, done.stderr
    assert host.generation_config()["services"]["tailscale"]["enable"] is True  # type: ignore[index]
    # Nothing was committed on the user's behalf, and the lock is as it was.
    assert host.git("log", "--format=%s").splitlines() == ["Initial configuration"]
    assert host.git("status", "--porcelain", "flake.lock") == ""


def test_clean_git_flake_is_not_dirty(git_flake_host: FlakeHost) -> None:
    done = git_flake_host.rebuild("build", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 0, done.stderr
    assert "dirty" not in done.stderr


def test_fetch_tarball_without_sha256_fails_in_pure_mode(flake_host: FlakeHost, tmp_path: Path) -> None:
    tarball = tmp_path / "sops-nix.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(STANDIN, arcname="sops-nix")
    flake_host.write(
        "/etc/nixos/sops.nix",
        f'{{ imports = [ "${{builtins.fetchTarball "file://{tarball}"}}/modules/sops" ]; }}\n',
    )
    flake_host.import_in_configuration("sops.nix")
    done = flake_host.rebuild("build", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 1
    assert "in pure evaluation mode, 'fetchTarball' requires a 'sha256' argument" in done.stderr

    nar_hash = subprocess.run(
        ["nix-hash", "--type", "sha256", "--base32", str(STANDIN)], capture_output=True, text=True, check=True
    ).stdout.strip()
    flake_host.write(
        "/etc/nixos/sops.nix",
        f"""\
        {{
          imports = [ "${{builtins.fetchTarball {{ url = "file://{tarball}"; sha256 = "{nar_hash}"; }}}}/modules/sops" ];
        }}
        """,
    )
    done = flake_host.rebuild("build", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("import <nixpkgs> { }", "cannot look up '<nixpkgs>' in pure evaluation mode"),
        ("import /etc/hostname", "access to absolute path '/etc/hostname' is forbidden in pure eval mode"),
    ],
)
def test_impure_lookups_fail(flake_host: FlakeHost, expression: str, message: str) -> None:
    flake_host.write("/etc/nixos/impure.nix", f"{{ networking.domain = {expression}; }}\n")
    flake_host.import_in_configuration("impure.nix")
    done = flake_host.rebuild("build", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 1
    assert message in done.stderr


def test_input_the_lab_does_not_have_cannot_be_downloaded(flake_host: FlakeHost) -> None:
    flake = flake_host.etc_nixos / "flake.nix"
    flake.write_text(
        flake.read_text().replace(
            "  inputs.nixpkgs.url",
            '  inputs.home-manager.url = "github:nix-community/home-manager";\n  inputs.nixpkgs.url',
        )
    )
    lock_before = (flake_host.etc_nixos / "flake.lock").read_bytes()
    done = flake_host.rebuild("build", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 1
    assert "unable to download 'https://api.github.com/repos/nix-community/home-manager" in done.stderr
    assert (flake_host.etc_nixos / "flake.lock").read_bytes() == lock_before


def test_local_input_missing_from_lock_is_an_error(flake_host: FlakeHost, tmp_path: Path) -> None:
    module = tmp_path / "extra-flake"
    module.mkdir()
    (module / "flake.nix").write_text("{ outputs = { self }: { nixosModules.default = { }; }; }\n")
    flake = flake_host.etc_nixos / "flake.nix"
    flake.write_text(
        flake.read_text().replace(
            "  inputs.nixpkgs.url", f'  inputs.extra.url = "path:{module}";\n  inputs.nixpkgs.url'
        )
    )
    lock_before = (flake_host.etc_nixos / "flake.lock").read_bytes()
    done = flake_host.rebuild("build", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 1
    assert "requires lock file changes" in done.stderr
    assert "The lab never writes flake.lock" in done.stderr
    assert (flake_host.etc_nixos / "flake.lock").read_bytes() == lock_before


def test_inline_flake_does_not_use_configuration_nix(tmp_path: Path) -> None:
    host = make_flake_host(tmp_path, style="inline")
    assert "./configuration.nix" not in (host.etc_nixos / "flake.nix").read_text()
    host.write("/etc/nixos/configuration.nix", "this file is not read { \n")
    done = host.rebuild("switch", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 0, done.stderr
    config = host.generation_config()
    assert config["users"]["users"]["root"]["openssh"]["authorizedKeys"]["keys"] == [ADMIN_KEY]  # type: ignore[index]


def test_sops_nix_input_provides_sops_secrets(tmp_path: Path) -> None:
    host = make_flake_host(tmp_path, style="sops-nix", git=True)
    key = host.path("/etc/ssh/ssh_host_ed25519_key")
    key.parent.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    recipient = ssh_public_key_to_age(key.with_suffix(".pub").read_text())
    encrypt_yaml(
        host.path("/etc/nixos/secrets/tailscale.yaml"), "tailscale_auth_key: tskey-auth-x\n", recipient
    )
    host.write(
        "/etc/nixos/secrets.nix", "{ sops.secrets.tailscale_auth_key.sopsFile = ./secrets/tailscale.yaml; }\n"
    )
    host.import_in_configuration("secrets.nix")
    host.git("add", "--intent-to-add", "secrets.nix", "secrets/tailscale.yaml")

    done = host.rebuild("switch", "--flake", f"/etc/nixos#{HOSTNAME}")
    assert done.returncode == 0, done.stderr
    assert host.path("/run/secrets/tailscale_auth_key").read_text() == "tskey-auth-x"
    secret = host.generation_config()["sops"]["secrets"]["tailscale_auth_key"]  # type: ignore[index]
    # A flake's files reach the evaluation through the store, the encrypted secrets file too.
    assert secret["sopsFile"].startswith("/nix/store/")
    lock = json.loads((host.etc_nixos / "flake.lock").read_text())
    assert lock["nodes"]["sops-nix"]["inputs"] == {"nixpkgs": ["nixpkgs"]}


def test_lab_flake_host_switches_over_ssh(lab: Lab) -> None:
    host = lab.add_host(flake=True, git=True)
    try:
        assert host.flake == "stock" and host.git
        listing = lab.ssh(host.name, "ls /etc/nixos; git -C /etc/nixos status --porcelain").stdout.split()
        assert {"flake.nix", "flake.lock", "configuration.nix", "hardware-configuration.nix"} <= set(listing)
        assert "??" not in listing
        lab.ssh(host.name, "test -e /run/current-system")
        lab.ssh(host.name, "echo '{ services.tailscale.enable = true; }' > /etc/nixos/extra.nix")
        lab.ssh(
            host.name, "sed -i 's|./hardware-configuration.nix|& ./extra.nix|' /etc/nixos/configuration.nix"
        )
        refused = lab.ssh(host.name, f"nixos-rebuild switch --flake /etc/nixos#{host.name}", check=False)
        assert refused.returncode == 1
        assert "warning: Git tree '/etc/nixos' is dirty" in refused.stderr
        assert "-source/extra.nix' does not exist" in refused.stderr
        lab.ssh(host.name, "git -C /etc/nixos add --intent-to-add extra.nix")
        lab.ssh(host.name, f"nixos-rebuild switch --flake /etc/nixos#{host.name}")
        assert lab.ssh(host.name, "systemctl is-active tailscaled").stdout.strip() == "active"
        assert lab.ssh(host.name, "git -C /etc/nixos status --porcelain flake.lock").stdout == ""
    finally:
        lab.stop_host(host.name)
