"""Packaging: one version, the licence, py.typed, and extras that stay installable together."""
import re
import socket
import subprocess
import sys

import pytest

import difflab
from conftest import REPO_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
FEATURE_EXTRAS = ("afd", "diffusers", "onnx", "tensorboard", "wandb")


def distribution(requirement: str) -> str:
    """'opencv-python-headless>=4.8,<5' -> 'opencv-python-headless' (normalised)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def test_extras_say_what_they_bring_and_all_is_their_union():
    assert set(FEATURE_EXTRAS) | {"all", "test"} == set(EXTRAS)
    features = {requirement for extra in FEATURE_EXTRAS for requirement in EXTRAS[extra]}
    assert set(EXTRAS["all"]) == features, "the `all` extra must list exactly the feature extras' requirements"
    assert {"pytest", "diffusers"} <= {distribution(r) for r in EXTRAS["test"]}
    # The test extra pins what it shares with a feature extra the same way.
    for requirement in EXTRAS["test"]:
        same = [r for r in features if distribution(r) == distribution(requirement)]
        assert not same or same == [requirement], requirement


def test_one_version_source():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "difflab.__version__"}
    from importlib.metadata import version
    assert version("difflab") == difflab.__version__


def test_licence_typing_and_metadata():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    licence = (REPO_ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Copyright (c) 2026 difflab contributors" in licence
    assert (REPO_ROOT / "src" / "difflab" / "py.typed").is_file()
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["difflab"] == ["py.typed"]
    assert any(requirement.startswith("pillow>=10.1") for requirement in project["dependencies"])
    assert "License :: OSI Approved :: MIT License" not in project["classifiers"]  # SPDX form replaces it
    requires = PYPROJECT["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+).*", r) and int(re.match(r"setuptools>=(\d+)", r).group(1)) >= 77
               for r in requires)


def online(host: str = "pypi.org", port: int = 443) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_all_extras_resolve_together_beside_the_pinned_torch():
    """`pip install ".[all,test]"` with the CI's constraints resolves, and pulls no other torch
    (nor any CUDA package): a dry run, so nothing is installed."""
    if not online():
        pytest.skip("no network: cannot ask the package index")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--disable-pip-version-check", "-c",
         str(REPO_ROOT / "constraints.txt"), f"{REPO_ROOT}[all,test]"],
        capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    would = re.search(r"^Would install (.*)$", result.stdout, re.M)
    installs = would.group(1).split() if would else []
    assert not [name for name in installs if re.match(r"(torch|torchvision|nvidia|triton)-", name, re.I)], installs
