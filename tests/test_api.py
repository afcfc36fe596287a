"""The documented Python API: cheap `import difflab`, every public name resolves, and the README's
example (the same block as docs/api.md's) runs."""
import os
import re
import subprocess
import sys

import pytest

import difflab
from conftest import REPO_ROOT

EXAMPLE_SIZES = "STEPS, IMAGES = 1500, 200  # a first look; more STEPS, better shapes"


def python_example(path):
    """The first ```python block of a Markdown file."""
    match = re.search(r"```python\n(.*?)```", path.read_text(), re.S)
    assert match, f"{path} has no python example"
    return match.group(1)


def test_import_difflab_does_not_import_torch():
    code = "import sys, difflab; print('torch' in sys.modules, difflab.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    assert result.stdout.split() == ["False", difflab.__version__]


def test_every_public_name_resolves():
    for name in difflab.__all__:
        assert getattr(difflab, name) is not None, name
    assert set(difflab.__all__) <= set(dir(difflab))
    with pytest.raises(AttributeError):
        difflab.no_such_name  # noqa: B018
    from difflab.generation import load_model
    assert difflab.load_model is load_model


def test_every_public_name_is_documented():
    api = (REPO_ROOT / "docs" / "api.md").read_text()
    missing = [name for name in difflab.__all__ if name != "__version__" and name not in api]
    assert not missing, f"docs/api.md does not mention {missing}"


def test_readme_and_api_docs_show_the_same_example():
    assert python_example(REPO_ROOT / "README.md") == python_example(REPO_ROOT / "docs" / "api.md")


def test_python_module_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "difflab", "--version"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    assert result.returncode == 0 and result.stdout.strip() == f"difflab {difflab.__version__}"


@pytest.mark.slow  # ~30 s: the preview grid and the samples, 50 DDIM steps each
def test_readme_python_example_runs(tmp_path, monkeypatch, shared_eval, capsys):
    """With 3 training steps and 8 images, and the shared feature network instead of the FID
    Inception (whose weights this machine cannot download)."""
    code = python_example(REPO_ROOT / "README.md")
    assert code.count(EXAMPLE_SIZES) == 1 and code.count('load_extractor("inception"') == 1
    code = code.replace(EXAMPLE_SIZES, "STEPS, IMAGES = 3, 8")
    code = code.replace('load_extractor("inception"', f'load_extractor("{shared_eval}/featnet.py:cifar10"')
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out
    assert "trained 3 steps" in printed and re.search(r"KID -?\d+\.\d{4} ± \d+\.\d{4}", printed)
    assert len(list((tmp_path / "samples" / "shapes-api").glob("*.png"))) == 8
