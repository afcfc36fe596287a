"""Shared pytest fixtures: locating the real data that lives beside the repository.

`../shared/data` and `../shared/eval` are never copied into the repo. Tests that
need them take these fixtures and are skipped, with the reason, where absent.
Set DIFFLAB_SHARED to use a `shared` folder somewhere else.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

try:  # run from a plain checkout too, without `pip install -e .`
    import difflab  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))


def shared_folder(name: str) -> Path:
    """`<shared>/<name>`, where <shared> is $DIFFLAB_SHARED or the folder beside the repo."""
    override = os.environ.get("DIFFLAB_SHARED")
    shared = Path(override).expanduser() if override else REPO_ROOT.parent / "shared"
    return shared / name


def _existing_or_skip(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (set DIFFLAB_SHARED to the folder holding data/ and eval/)")
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real image sets (anime faces, CIFAR-10 JPEG zips, MNIST IDX files)."""
    return _existing_or_skip(shared_folder("data"))


@pytest.fixture(scope="session")
def shared_eval() -> Path:
    """../shared/eval: the fixed feature networks (featnet.py and its weights)."""
    return _existing_or_skip(shared_folder("eval"))

