"""Library errors name options by their library name; the command line names them by its flags.

`ConfigError("{option} ...", option="batch_size")` reads "batch_size ..." in Python (str) and
"--batch-size ..." when a command reports it (cli.main's flag_namer: the option's argparse dest
becomes the flag, or the metavar of a positional). The last test keeps flag spellings out of the
library's messages for good.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from PIL import Image

import difflab
from difflab.cli.main import build_parser, flag_namer, main
from difflab.errors import ConfigError, DataError

# ---- rendering ---------------------------------------------------------------------------------


def test_placeholders_render_the_python_name_or_a_commands_flag():
    error = ConfigError("{option} must be divisible by {option:grad_accum}; got 6", option="batch_size")
    assert str(error) == "batch_size must be divisible by grad_accum; got 6"
    assert error.render(flag_namer(build_parser(), "train")) == "--batch-size must be divisible by --grad-accum; got 6"
    unplaced = ConfigError("must be positive", option="steps")  # no placeholder: the option leads
    assert str(unplaced) == "steps: must be positive"
    data = DataError("add images or lower {option}", option="batch_size")
    assert str(data) == "add images or lower batch_size"
    assert data.render(flag_namer(build_parser(), "train")) == "add images or lower --batch-size"
    assert str(DataError("a {plain} message")) == "a {plain} message"  # braces of other text stay


def test_flag_namer_spells_long_flags_positionals_and_unknown_names():
    parser = build_parser()
    sample, kid = flag_namer(parser, "sample"), flag_namer(parser, "kid")
    assert sample("num_images") == "--num-images" and sample("guide_fraction") == "--guide-fraction"  # -n: the long one
    assert kid("generated") == "GENERATED"  # a positional: its metavar
    assert sample("save_every") == "--save-every"  # another command's option: its dashed name
    error = ConfigError("{option} is empty", option="generated")
    assert (str(error), error.render(kid)) == ("generated is empty", "GENERATED is empty")


def cli_error(capsys, argv: list[str]) -> str:
    """The one error line a command prints for `argv` (usage errors exit 2, data errors return 1)."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code in (1, 2)
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_train_names_its_flags_options_and_positional(tmp_path, capsys):
    from difflab.families.stylegan2.options import check_stylegan2_options
    from difflab.families import make_config

    config = make_config({"model": "stylegan2", "data": "x", "out": "y", "image_size": 12})
    with pytest.raises(ConfigError) as error:  # a message about two options
        check_stylegan2_options(config)
    assert str(error.value).startswith("image_size must be a power of two >= 8 for model stylegan2")
    message = cli_error(capsys, ["train", "shapes", "--out", str(tmp_path / "gan"), "--model", "stylegan2",
                                 "--image-size", "12", "--no-progress"])
    assert "error: --image-size must be a power of two >= 8 for --model stylegan2" in message

    from difflab.config import TrainConfig
    with pytest.raises(ConfigError) as error:  # a positional
        TrainConfig(out="y").validate()
    assert error.value.option == "data" and str(error.value).startswith("data")
    assert "error: DATA" in cli_error(capsys, ["train", "--out", str(tmp_path / "run"), "--no-progress"])


def test_sample_names_its_flags(tmp_path, capsys):
    from difflab.generation.guide import check_guide_fraction

    with pytest.raises(ConfigError) as error:
        check_guide_fraction(1.5)
    assert str(error.value).startswith("guide_fraction must lie between 0 and 1")
    message = cli_error(capsys, ["sample", str(tmp_path / "no-run"), "--out", str(tmp_path / "s"),
                                 "--guide", "auto", "--guide-fraction", "1.5", "--no-progress"])
    assert "error: --guide-fraction must lie between 0 and 1" in message


@pytest.fixture
def two_folders(tmp_path) -> tuple[Path, Path]:
    folders = tmp_path / "a", tmp_path / "b"
    for folder in folders:
        folder.mkdir()
        for index in range(2):
            Image.new("RGB", (8, 8), (40 * index, 0, 0)).save(folder / f"{index}.png")
    return folders


def test_kid_and_afd_name_their_flags(two_folders, tmp_path, capsys):
    from difflab.metrics.afd import load_detector
    from difflab.metrics.extractors import load_extractor

    generated, reference = map(str, two_folders)
    with pytest.raises(ConfigError) as error:
        load_extractor("nope.py:f")
    assert str(error.value).startswith("features 'nope.py:f'")
    message = cli_error(capsys, ["kid", generated, reference, "--features", "nope.py:f", "--device", "cpu",
                                 "--no-progress"])
    assert "error: --features 'nope.py:f'" in message

    with pytest.raises(ConfigError) as error:  # two options
        load_detector("yolo")
    assert str(error.value).startswith("detector yolo needs detector_weights PATH.pt")
    message = cli_error(capsys, ["afd", generated, "--detector", "yolo", "--no-progress"])
    assert "error: --detector yolo needs --detector-weights PATH.pt" in message


def test_a_data_error_names_the_flag_too(two_folders, tmp_path, capsys):
    from difflab.metrics.inception import load_fid_inception

    missing = tmp_path / "absent.pth"
    with pytest.raises(DataError) as error:
        load_fid_inception(missing, allow_download=False)
    assert str(error.value).startswith(f"inception_weights points to {missing}")
    generated, reference = map(str, two_folders)
    argv = ["fid", generated, reference, "--inception-weights", str(missing), "--device", "cpu", "--no-progress"]
    try:
        assert main(argv) == 1
    except SystemExit as exit_info:
        assert exit_info.code == 1
    assert f"difflab: error: --inception-weights points to {missing}" in capsys.readouterr().err


# ---- no flag spellings in library messages ----------------------------------------------------------

SOURCE = Path(difflab.__file__).parent
# Converted elsewhere in this change (issue 19, other helpers); the integrator removes this list
# after merging.
MESSAGE_CALLS = {"ConfigError", "DataError", "warn"}  # warn: warnings.warn
FLAG = re.compile(r"(?<![\w-])--[A-Za-z]")


def _called_name(call: ast.Call) -> str | None:
    function = call.func
    return function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)


def flag_spellings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant with a `--flag` in a ConfigError, DataError or warn call."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node) in MESSAGE_CALLS:
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                for part in ast.walk(argument):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str) and FLAG.search(part.value):
                        found.append((part.lineno, part.value))
    return found


def test_the_static_check_finds_flags_in_messages():
    code = 'raise ConfigError(f"--batch-size must be positive; got {n}")\nwarnings.warn("pass --resume")\n' \
           'raise DataError("{option} is fine", option="out")\nraise ValueError("x--y")'
    assert [line for line, _ in flag_spellings(ast.parse(code))] == [1, 2]


def test_no_library_message_spells_a_flag():
    offenders = []
    for path in sorted(SOURCE.rglob("*.py")):
        name = path.relative_to(SOURCE).as_posix()
        if name.startswith("cli/"):
            continue
        offenders += [f"{name}:{line}: {text!r}" for line, text in flag_spellings(ast.parse(path.read_text()))]
    assert not offenders, ("library messages name options by their library name, with {option} placeholders "
                           "(difflab.errors.ConfigError), not by a flag:\n" + "\n".join(offenders))
