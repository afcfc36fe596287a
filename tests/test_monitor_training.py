"""The quality monitor inside real (tiny) training runs: evaluations at the right steps, the best
checkpoint, resume keeping the best-so-far and the schedule, early stopping, trackers."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from difflab.cli.main import main
from difflab.training.checkpoint import checkpoint_step, list_checkpoints

STUB_FEATURES = '''
import torch

class MeanColour:
    def features(self, images):
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)

def net(device="cpu"):
    return MeanColour()
'''


@pytest.fixture
def features(tmp_path) -> str:
    path = tmp_path / "stub_features.py"
    path.write_text(STUB_FEATURES)
    return f"{path}:net"


def tiny(out: Path, features: str, *extra: str) -> list[str]:
    return ["train", "shapes", "--out", str(out), "--image-size", "16", "--batch-size", "8", "--channels", "16",
            "--dim-mults", "1,2", "--attn-resolutions", "", "--res-blocks", "1", "--save-every", "10",
            "--log-every", "10", "--grid-images", "4", "--eval-images", "24", "--eval-batch-size", "12",
            "--eval-sampler-steps", "4", "--eval-features", features, "--no-progress", *extra]


def evaluations(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["eval"] for r in records if "eval" in r]


def test_scores_are_logged_at_the_right_steps_and_the_best_is_kept(tmp_path, features, capsys):
    run = tmp_path / "run"
    assert main(tiny(run, features, "--steps", "40", "--eval-every", "10", "--keep-best")) == 0
    printed = capsys.readouterr().out  # the run's last word names the best step and where it is kept
    scores = evaluations(run)
    assert [r["step"] for r in scores] == [10, 20, 30, 40]
    best = min(scores, key=lambda r: r["fd"])
    summary = json.loads((run / "summary.json").read_text())["monitor"]
    assert summary["best_step"] == best["step"] and summary["evaluations"] == 4
    assert f"quality:    best FD {best['fd']:.4g} at step {best['step']:,} (kept: sample it with --weights best)" in printed
    kept = list_checkpoints(run / "checkpoints" / "best")
    assert [checkpoint_step(p) for p in kept] == [best["step"]]
    assert (run / "quality.png").is_file()
    assert all(r["eval_share"] > 0 and r["seconds"] > 0 for r in scores)
    assert main(["sample", str(run), "--weights", "best", "-n", "2", "--steps", "3", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "s" / "difflab-sample.json").read_text())
    assert f"ckpt-{best['step']:08d}" in json.dumps(manifest)


def test_resume_keeps_the_best_so_far_and_the_schedule_of_evaluations(tmp_path, features):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(tiny(straight, features, "--steps", "40", "--eval-every", "10", "--keep-best")) == 0
    assert main(tiny(resumed, features, "--steps", "20", "--eval-every", "10", "--keep-best")) == 0
    assert main(tiny(resumed, features, "--steps", "40", "--eval-every", "10", "--keep-best", "--resume")) == 0
    pick = lambda run: [(r["step"], r["fd"], r["best_step"]) for r in evaluations(run)]  # noqa: E731
    assert pick(resumed) == pick(straight)  # the same samples, scores and best, with or without the stop
    assert json.loads((resumed / "summary.json").read_text())["monitor"]["best_step"] == \
        json.loads((straight / "summary.json").read_text())["monitor"]["best_step"]


def test_early_stopping_ends_the_run_with_a_checkpoint(tmp_path, features):
    run = tmp_path / "run"
    # eval-images 2 and a huge learning rate: scores are noisy and soon stop improving within 1 evaluation
    assert main(tiny(run, features, "--steps", "200", "--eval-every", "10", "--early-stop-patience", "1")) == 0
    summary = json.loads((run / "summary.json").read_text())
    scores = evaluations(run)
    if summary["stopped_by"] == "early_stop":
        assert scores[-1]["step"] == summary["step"] < 200
        assert scores[-1]["fd"] >= min(r["fd"] for r in scores[:-1])
        assert checkpoint_step(list_checkpoints(run / "checkpoints")[-1]) == summary["step"]
    else:  # every evaluation improved on the last: no stop was due
        assert all(b["fd"] < a["fd"] for a, b in zip(scores, scores[1:]))


def test_holdout_images_are_listed(tmp_path, features):
    run = tmp_path / "run"
    assert main(tiny(run, features, "--steps", "10", "--eval-every", "10", "--holdout", "50")) == 0
    held = json.loads((run / "holdout.json").read_text())
    assert held["count"] == 50 and len(set(held["images"])) == 50
    record = evaluations(run)[0]
    assert {"near_copy_rate", "holdout_near_copy_rate", "nearest_median"} <= record.keys()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_the_tensorboard_logger_writes_event_files(tmp_path, features):
    run = tmp_path / "run"
    assert main(tiny(run, features, "--steps", "20", "--eval-every", "10", "--logger", "tensorboard")) == 0
    events = list((run / "logs").rglob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = set()
    for folder in {e.parent for e in events}:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        tags |= set(accumulator.Tags().get("scalars", [])) | set(accumulator.Tags().get("images", []))
    assert {"loss", "eval/fd"} <= tags and "samples" in tags


def test_a_missing_tracker_is_a_message_before_any_work(tmp_path, features, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(tiny(run, features, "--steps", "20", "--logger", "tensorboard"))
    assert exit_info.value.code == 2
    assert "--logger tensorboard needs the tensorboard package: pip install 'difflab[tensorboard]'" in \
        capsys.readouterr().err
    assert not run.exists()


def test_missing_eval_features_fail_before_any_work_naming_the_option(tmp_path, features, capsys):
    # found on the GPU: a run whose --eval-features file was gone failed after data loading and
    # compilation, and its message named --features
    run = tmp_path / "run"
    missing = tmp_path / "gone.py"
    args = tiny(run, features, "--steps", "20", "--eval-every", "10")
    args[args.index("--eval-features") + 1] = f"{missing}:cifar10"
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert f"--eval-features '{missing}:cifar10': {missing} does not exist" in capsys.readouterr().err
    assert not run.exists()


def test_the_evaluation_sampler_is_an_option(tmp_path, features, capsys):
    scores = {}
    for sampler in ("ddim", "dpmpp-2m"):
        run = tmp_path / sampler
        assert main(tiny(run, features, "--steps", "10", "--eval-every", "10", "--eval-sampler", sampler)) == 0
        assert json.loads((run / "config.json").read_text())["eval_sampler"] == sampler
        scores[sampler] = evaluations(run)[0]["fd"]
    assert scores["ddim"] != scores["dpmpp-2m"]  # the same weights and noise, another sampler
    with pytest.raises(SystemExit) as exit_info:
        main(tiny(tmp_path / "bad", features, "--steps", "10", "--eval-every", "10", "--eval-sampler", "euler"))
    assert exit_info.value.code == 2 and "--eval-sampler must be one of" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
