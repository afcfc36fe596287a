"""One name per option across subcommands (issue 19): the old spellings are hidden aliases that
still work and say what they are renamed; eval, compare and fuse score with one set of flags,
one Scorer and one failure policy."""
from __future__ import annotations

import argparse
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from difflab.cli.main import build_parser, main
from difflab.cli.scoring_options import SCORING_GROUP
from difflab.errors import ConfigError

RENAMED = "difflab: {old} is renamed {new}; the old name goes in the next release"

# (command and its required arguments, old spelling, new spelling); each pair parses to the same value.
ALIASES = [
    (["kid", "G", "R"], ["--subsets", "3"], ["--kid-subsets", "3"]),
    (["kid", "G", "R"], ["--subset-size", "7"], ["--kid-subset-size", "7"]),
    (["kid", "G", "R"], ["--batch-size", "9"], ["--feature-batch-size", "9"]),
    (["fid", "G", "R"], ["--batch-size", "9"], ["--feature-batch-size", "9"]),
    (["fid-stats", "R", "--out", "s.npz"], ["--batch-size", "9"], ["--feature-batch-size", "9"]),
    (["nearest", "G", "R", "--out", "nn.png"], ["--batch-size", "9"], ["--feature-batch-size", "9"]),
    (["nearest", "G", "R", "--out", "nn.png"], ["--pairs", "4"], ["--grid-pairs", "4"]),
    (["afd", "G"], ["--batch-size", "9"], ["--feature-batch-size", "9"]),
    (["afd", "G"], ["--reference", "R"], ["--real", "R"]),
    (["eval", "G", "R"], ["--subsets", "3"], ["--kid-subsets", "3"]),
    (["eval", "G", "R"], ["--subset-size", "7"], ["--kid-subset-size", "7"]),
    (["eval", "G", "R"], ["--batch-size", "9"], ["--feature-batch-size", "9"]),
    (["eval", "G", "R"], ["--no-afd"], ["--afd", "off"]),
    (["eval", "G", "R"], ["--pairs", "4"], ["--grid-pairs", "4"]),
    (["compare", "RUN", "--out", "o"], ["--metrics-batch-size", "9"], ["--feature-batch-size", "9"]),
    (["compare", "RUN", "--out", "o"], ["--precision", "bf16"], ["--mixed-precision", "bf16"]),
    (["fuse", "RUN", "--out", "o"], ["--metrics-batch-size", "9"], ["--feature-batch-size", "9"]),
    (["fuse", "RUN", "--out", "o"], ["--pairs", "5"], ["--random-pairs", "5"]),
    (["fuse", "RUN", "--out", "o"], ["--from", "R"], ["--real", "R"]),
    (["fuse", "RUN", "--out", "o"], ["--lams", "0,0.5,1"], ["--lam", "0,0.5,1"]),
    (["fuse", "RUN", "--out", "o"], ["--precision", "no"], ["--mixed-precision", "no"]),
    (["sample", "RUN", "--out", "o"], ["--precision", "no"], ["--mixed-precision", "no"]),
    (["progress", "RUN", "--out", "o.png"], ["--precision", "no"], ["--mixed-precision", "no"]),
    (["demo"], ["--minutes", "2"], ["--max-minutes", "2"]),
]
# Old spellings of a value: accepted, and said to be renamed.
RENAMED_VALUES = [(command, ["--afd", old], ["--afd", new]) for command in (["eval", "G", "R"],
                  ["compare", "RUN", "--out", "o"], ["fuse", "RUN", "--out", "o"]) for old, new in (("yes", "on"),
                                                                                                  ("no", "off"))]


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@pytest.mark.parametrize(("command", "old", "new"), ALIASES + RENAMED_VALUES,
                         ids=[f"{c[0]} {' '.join(o)}" for c, o, _ in ALIASES + RENAMED_VALUES])
def test_an_old_spelling_works_is_hidden_and_says_it_is_renamed(command, old, new, capsys):
    parser = build_parser()
    with_new = parser.parse_args([*command, *new])
    assert capsys.readouterr().err == ""  # the new spelling says nothing
    with_old = parser.parse_args([*command, *old])
    assert vars(with_old) == vars(with_new)
    if old[0] == new[0]:  # a renamed value: --afd yes
        announced = " ".join(old), " ".join(new)
    elif len(old) < len(new):  # a switch that stands for a flag and its value: --no-afd
        announced = old[0], " ".join(new)
    else:
        announced = old[0], new[0]
    assert capsys.readouterr().err == RENAMED.format(old=announced[0], new=announced[1]) + "\n"
    help_text = subparser(command[0]).format_help()
    assert mentions(help_text, new[0])
    if old[0] != "--afd":
        assert not mentions(help_text, old[0])
    else:  # the old values are not listed either
        assert "{auto,on,off}" in help_text and "yes" not in help_text


def test_a_library_error_names_the_flag_as_the_command_spells_it(tmp_path, capsys):
    with pytest.raises(ConfigError, match="^kid_subsets must be at least 1; got 0$"):
        from difflab.experiments.scoring import ScoringOptions
        ScoringOptions(kid_subsets=0)
    for command, spelled in ((["kid", "--subsets", "0"], "--kid-subsets"),
                             (["eval", "--batch-size", "0"], "--feature-batch-size"),
                             (["eval", "--kid-subset-size", "1"], "--kid-subset-size"),
                             (["fid", "--feature-batch-size", "0"], "--feature-batch-size")):
        with pytest.raises(SystemExit) as usage_error:
            main([command[0], str(tmp_path), str(tmp_path), *command[1:]])
        assert usage_error.value.code == 2
        assert f"{spelled} must be at least" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["kid", str(tmp_path), str(tmp_path / "real.npz")])
    assert "REAL must be images" in capsys.readouterr().err  # a positional reads as its metavar


def test_eval_compare_and_fuse_expose_the_same_scoring_flags():
    def scoring_flags(command: str) -> list[tuple]:
        group = next(g for g in subparser(command)._action_groups if g.title == SCORING_GROUP)
        return [(tuple(a.option_strings), a.dest, a.default, a.choices, a.help) for a in group._group_actions]

    flags = scoring_flags("eval")
    assert [f[0][0] for f in flags] == ["--features", "--inception-weights", "--feature-batch-size", "--afd",
                                        "--detector", "--detector-weights", "--kid-subsets", "--kid-subset-size"]
    assert scoring_flags("compare") == flags and scoring_flags("fuse") == flags


# ---- the same scores and the same failures through eval, compare and fuse -----------------------

TINY_EXTRACTOR = '''
import torch.nn.functional as F


class Thumbnail:
    def features(self, images):
        return F.adaptive_avg_pool2d(images.mean(dim=1, keepdim=True), 4).flatten(1)


def thumb4():
    return Thumbnail()
'''


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vocabulary") / "run"
    assert main(["train", "shapes", "--out", str(run), "--image-size", "16", "--channels", "16", "--dim-mults",
                 "1,2", "--res-blocks", "1", "--attn-resolutions", "8", "--batch-size", "8", "--steps", "2",
                 "--save-every", "2", "--timesteps", "50", "--grid-images", "4", "--grid-sampler-steps", "2",
                 "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory, shared_data) -> Path:
    """40 real faces and one broken file: every command skips and counts it the same way."""
    folder = tmp_path_factory.mktemp("faces")
    with zipfile.ZipFile(shared_data / "anime-faces-96px-2k.zip") as archive:
        for member in sorted(n for n in archive.namelist() if n.endswith(".jpg"))[:40]:
            (folder / Path(member).name).write_bytes(archive.read(member))
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    return folder


@pytest.fixture(scope="module")
def scoring(tmp_path_factory, shared_data) -> list[str]:
    """The same scoring flags for all three commands: a 16-d feature space (so 20 images give an FD)."""
    extractor = tmp_path_factory.mktemp("extractor") / "tiny.py"
    extractor.write_text(TINY_EXTRACTOR)
    return ["--features", f"{extractor}:thumb4", "--detector-weights", str(shared_data / "lbpcascade_animeface.xml"),
            "--kid-subsets", "10", "--kid-subset-size", "15", "--feature-batch-size", "7", "--device", "cpu",
            "--no-progress"]


def evaluated(folder: Path, real: Path, scoring: list[str], tmp_path: Path) -> dict:
    report = tmp_path / f"{folder.name}-eval.json"
    assert main(["eval", str(folder), str(real), "--json", str(report), *scoring]) == 0
    return json.loads(report.read_text())


def assert_same_scores(scores: dict, results: dict) -> None:
    """compare's or fuse's record of a set equals eval's report of it."""
    assert scores["distance"]["value"] == pytest.approx(results["fd"], rel=1e-12)
    assert (scores["kid"]["value"], scores["kid"]["std"]) == pytest.approx(
        (results["kid"]["mean"], results["kid"]["std"]), rel=1e-12)
    assert scores["kid"]["subset_size"] == results["kid"]["subset_size"] == 15
    if "afd" in results:  # OpenCV installed
        assert scores["afd"]["value"] == results["afd"]["rate"]
        assert scores["afd"]["reference_rate"] == results["afd"]["reference_rate"]
    assert scores["num_images"] == results["generated"]["num_images"] == 20


def test_eval_compare_and_fuse_give_the_same_scores(tiny_run, real_faces, scoring, tmp_path):
    study = tmp_path / "study"
    assert main(["compare", str(tiny_run), "--samplers", "ddim:2", "-n", "20", "--batch-size", "10",
                 "--real", str(real_faces), "--out", str(study), *scoring]) == 0
    document = json.loads((study / "results.json").read_text())
    results = evaluated(Path(document["rows"][0]["folder"]), real_faces, scoring, tmp_path)
    assert_same_scores(document["rows"][0]["metrics"], results)
    assert results["reference"]["num_images"] == document["scoring"]["reference_images"] == 40
    assert results["reference"]["num_unreadable"] == 1

    fused = tmp_path / "fused"
    assert main(["fuse", str(tiny_run), "--random-pairs", "20", "--real", str(real_faces), "--out", str(fused),
                 "--sampler", "ddim", "--steps", "2", "--t", "20", "--batch-size", "10", *scoring]) == 0
    assert_same_scores(json.loads((fused / "scores.json").read_text())["scores"],
                       evaluated(fused, real_faces, scoring, tmp_path))


def test_eval_compare_and_fuse_fail_alike_on_missing_detector_weights(tiny_run, real_faces, scoring, tmp_path,
                                                                     capsys):
    missing = ["--detector-weights", str(tmp_path / "no-such-cascade.xml")]
    generated = tmp_path / "generated"
    shutil.copytree(real_faces, generated)
    commands = [["eval", str(generated), str(real_faces)],
                ["compare", str(tiny_run), "--samplers", "ddim:2", "-n", "4", "--real", str(real_faces),
                 "--out", str(tmp_path / "study")],
                ["fuse", str(tiny_run), "--random-pairs", "4", "--real", str(real_faces), "--out", str(tmp_path / "f"),
                 "--sampler", "ddim", "--steps", "2", "--t", "20"]]
    errors = []
    for command in commands:
        assert main([*command, *scoring, *missing]) == 1
        errors.append(capsys.readouterr().err.strip().splitlines()[0])
    assert errors[0].startswith("difflab: error: --detector-weights points to") and len(set(errors)) == 1


def test_too_few_images_give_the_same_reasons_in_eval_and_compare(tiny_run, real_faces, scoring, tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["compare", str(tiny_run), "--samplers", "ddim:2", "-n", "1", "--real", str(real_faces),
                 "--out", str(study), *scoring]) == 0
    row = json.loads((study / "results.json").read_text())["rows"][0]
    capsys.readouterr()
    results = evaluated(Path(row["folder"]), real_faces, scoring, tmp_path)  # one image: no FD, no KID, exit 0
    assert results["fd"] is None and results["kid"] is None
    assert results["kid_error"] == row["metrics"]["kid"]["reason"] and "at least 2 images" in results["kid_error"]
    # The same reason; eval names the folder it was given, compare "the generated set" (one footnote for all rows).
    assert results["fd_error"] == f"{row['folder']}: a covariance needs at least 2 images, got 1"
    assert row["metrics"]["distance"]["reason"] == "the generated set: a covariance needs at least 2 images, got 1"
    assert re.search(r"^KID +not computed: KID needs at least 2 images", capsys.readouterr().out, re.MULTILINE)
