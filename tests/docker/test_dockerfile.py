"""The Dockerfile's install step resolves against its base image's packages (no Docker engine here).

The base image's torch stack (``docker/base-image-packages.txt``: versions and what each requires of
the others) becomes metadata-only stub wheels, and pip itself resolves the install step's constraints
(``docker/derive_constraints.py``) against them with ``--dry-run --no-index``: offline, a second or
two, no multi-GB CUDA wheels. What this checks: no pin of ours fights a package the image ships, and
our requirements accept the image's versions. What it does not: the rest of the install (the other
packages come from the index at build time) nor the CUDA build itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docker"))
from derive_constraints import canonical, derive, pins  # noqa: E402

DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE = (ROOT / "docker" / "base-image-packages.txt").read_text()


def _image_requires() -> dict[str, list[str]]:
    requires = {}
    for line in IMAGE.splitlines():
        spec, _, comment = line.partition("#")
        if "==" in spec and "requires:" in comment:
            requires[canonical(spec.split("==")[0].strip())] = [
                r.strip() for r in comment.split("requires:", 1)[1].split(",") if r.strip()]
    return requires


def _stub_wheels(directory: Path) -> None:
    """One metadata-only wheel per image package, requiring what the image's package requires."""
    requires = _image_requires()
    for name, line in pins(IMAGE).items():
        version = line.split("==")[1]
        stem = f"{name.replace('-', '_')}-{version}"
        metadata = "\n".join(["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
                              *(f"Requires-Dist: {r}" for r in requires.get(name, []))]) + "\n"
        with zipfile.ZipFile(directory / f"{stem}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{stem}.dist-info/METADATA", metadata)
            wheel.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            wheel.writestr(f"{stem}.dist-info/RECORD", "")


def _our_requirements_on_image_packages() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["triton"]]
    image = set(pins(IMAGE))
    return [r for r in wanted if canonical(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) in image]


def _resolve(constraints: str, tmp_path: Path) -> subprocess.CompletedProcess:
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    _stub_wheels(wheels)
    (tmp_path / "constraints.txt").write_text(constraints)
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(wheels),
         "--ignore-installed", "--disable-pip-version-check", "--quiet", "--report", str(tmp_path / "report.json"),
         "-c", str(tmp_path / "constraints.txt"), *_our_requirements_on_image_packages()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})


def test_the_install_step_resolves_against_the_image_packages(tmp_path):
    assert {canonical(r.split(">")[0].split("=")[0].split(";")[0].strip())
            for r in _our_requirements_on_image_packages()} == {"torch", "triton"}
    result = _resolve(derive((ROOT / "constraints.txt").read_text(), IMAGE), tmp_path)
    assert result.returncode == 0, result.stderr
    installed = {i["metadata"]["name"]: i["metadata"]["version"]
                 for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert installed == {"torch": "2.8.0", "triton": "3.4.0"}  # the image's, untouched


def test_the_old_install_step_conflicts_so_the_check_can_fail(tmp_path):
    only_torch_dropped = "".join(line + "\n" for line in (ROOT / "constraints.txt").read_text().splitlines()
                                 if not line.startswith("torch=="))
    result = _resolve(only_torch_dropped, tmp_path)
    assert result.returncode != 0 and "triton" in result.stderr


def test_the_dockerfile_uses_the_derived_constraints_a_compiler_and_a_user():
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M).group(1)
    assert base in IMAGE  # the recorded packages are this image's
    assert "derive_constraints.py constraints.txt /tmp/image.txt > /tmp/constraints.txt" in DOCKERFILE
    assert 'pip install --no-cache-dir -c /tmp/constraints.txt ".[triton]"' in DOCKERFILE
    assert re.search(r"apt-get install -y --no-install-recommends gcc", DOCKERFILE)
    user = DOCKERFILE.index("USER nrg")
    assert DOCKERFILE.index("chown nrg:nrg /data") < user < DOCKERFILE.index("ENTRYPOINT")


@pytest.mark.parametrize(("line", "name"), [("Jinja2==3.1.6", "jinja2"), ("typing_extensions==4", "typing-extensions")])
def test_names_are_matched_normalised(line, name):
    assert name in pins(line)
    assert derive(line + "\n", line.lower().replace("_", "-") + "\n").count("==") == 1
