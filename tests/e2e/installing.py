"""Installing the product as a user would, offline: its wheel, built here, into a fresh virtualenv.

The tests must not need the internet, so the product's dependencies are not downloaded: each one installed
in the virtualenv running the tests is packed back into a wheel from its own RECORD (the files pip
installed, at the paths a wheel holds them), and the fresh virtualenv installs from those wheels alone
with `pip install --no-index`. pip still resolves the requirements itself, and generates the console
scripts (`tailnix`, `pyinfra`, `sops`) from the entry points, as it would from PyPI's wheels.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = Path(__file__).resolve().parents[2]
PRODUCT = "tailnix"
LAB = "tailnix-lab"
# Written by pip at install time, never part of a wheel.
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def _pip_environment() -> dict[str, str]:
    """The environment without this machine's pip settings (indexes, find-links): only what a call names."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    environment.pop("VIRTUAL_ENV", None)
    environment.pop("PYTHONPATH", None)
    return {**environment, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip(python: Path, *arguments: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", *arguments],
        capture_output=True,
        text=True,
        env=_pip_environment(),
        timeout=600,
    )
    assert result.returncode == 0, f"pip {' '.join(arguments)} failed:\n{result.stdout}\n{result.stderr}"


def build_product_wheel(directory: Path) -> Path:
    """`pip wheel --no-deps .` of the product, from a copy of what its pyproject.toml builds from."""
    source = directory / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / name, source / name)
    shutil.copytree(
        REPOSITORY / "src",
        source / "src",
        ignore=shutil.ignore_patterns("tailnix_lab", "__pycache__", "*.egg-info"),
    )
    wheels = directory / "wheels"
    # The build backend of the development virtualenv (a dev dependency), so nothing is downloaded.
    _pip(
        Path(sys.executable),
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(wheels),
        str(source),
    )
    (wheel,) = wheels.glob(f"{PRODUCT}-*.whl")
    return wheel


def dependency_closure(wheel: Path) -> list[metadata.Distribution]:
    """The installed distributions the wheel's requirements need, with theirs, markers evaluated here."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        headers = _headers(archive.read(name).decode())
    wanted = [(Requirement(value), frozenset({""})) for key, value in headers if key == "Requires-Dist"]
    found: dict[str, metadata.Distribution] = {}
    environment = dict(default_environment())
    while wanted:
        requirement, parent_extras = wanted.pop()
        # A requirement counts when its marker holds for one of the extras its parent was asked for.
        if requirement.marker is not None and not any(
            requirement.marker.evaluate({**environment, "extra": extra}) for extra in parent_extras
        ):
            continue
        key = canonicalize_name(requirement.name)
        if key in found:
            continue
        distribution = metadata.distribution(requirement.name)
        found[key] = distribution
        extras = frozenset(requirement.extras) | {""}
        wanted += [(Requirement(text), extras) for text in distribution.requires or []]
    return list(found.values())


def _headers(text: str) -> list[tuple[str, str]]:
    headers = []
    for line in text.split("\n\n", 1)[0].splitlines():
        if ": " in line and not line.startswith(" "):
            key, value = line.split(": ", 1)
            headers.append((key, value))
    return headers


def repack(distribution: metadata.Distribution, directory: Path) -> Path:
    """A wheel of an installed distribution: the files its RECORD lists inside site-packages."""
    files = [path for path in distribution.files or [] if path.parts[0] != ".."]
    info_directory = next(path.parts[0] for path in files if path.parts[0].endswith(".dist-info"))
    wheel_text = (distribution.locate_file(f"{info_directory}/WHEEL")).read_text()
    # Every tag of the WHEEL file, in the compressed form of a wheel's name (py2.py3-none-any).
    tags = [value.split("-") for key, value in _headers(wheel_text) if key == "Tag"]
    tag = "-".join(".".join(dict.fromkeys(parts[i] for parts in tags)) for i in range(3))
    name = re.sub(r"[-_.]+", "_", distribution.metadata["Name"])
    target = directory / f"{name}-{distribution.version}-{tag}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for path in files:
            if "__pycache__" in path.parts or (
                path.parts[0] == info_directory and path.name in _INSTALL_ONLY
            ):
                continue
            data = Path(distribution.locate_file(path)).read_bytes()
            archive.writestr(path.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([path.as_posix(), f"sha256={digest}", len(data)])
        writer.writerow([f"{info_directory}/RECORD", "", ""])
        archive.writestr(f"{info_directory}/RECORD", record.getvalue())
    return target


def install_product(directory: Path) -> Path:
    """A fresh virtualenv in `directory`/venv with the product's wheel installed, offline; its bin/."""
    wheel = build_product_wheel(directory / "build")
    wheels = wheel.parent
    for distribution in dependency_closure(wheel):
        assert canonicalize_name(distribution.metadata["Name"]) not in {PRODUCT, LAB}
        repack(distribution, wheels)
    venv = directory / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    _pip(venv / "bin" / "python", "install", "--no-index", "--find-links", str(wheels), str(wheel))
    return venv / "bin"
