"""The quality monitor's parts: streaming statistics, the held-out split, best/early-stop bookkeeping
with a planted score sequence, resume, and the memorisation alarm on real faces."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.config import TrainConfig
from difflab.data import BatchStream, load_dataset
from difflab.data.base import TensorImageDataset
from difflab.data.holdout import split_holdout
from difflab.errors import ConfigError
from difflab.metrics.extractors import Extractor
from difflab.metrics.running import RunningStatistics
from difflab.metrics.statistics import FeatureStatistics
from difflab.training.monitor import (MonitorSettings, QualityMonitor, copies_clearly_exceed, data_copying_z,
                                     describe_summary)


class MeanColour:
    """A stub feature network: each image's mean value per channel and its mean square (4 features)."""

    def features(self, images):
        return torch.cat([images.mean(dim=(2, 3)), images.pow(2).mean(dim=(1, 2, 3))[:, None]], dim=1)


STUB = Extractor("stub", MeanColour(), identity="stub:1")


def settings(**changes) -> MonitorSettings:
    values = dict(every_steps=10, images=64, metric="fd", features="stub", batch_size=32, keep_best=True,
                  early_stop_patience=0, holdout=0)
    values.update(changes)
    return MonitorSettings(**values)


def test_running_statistics_equal_the_batch_formula():
    rng = np.random.default_rng(0)
    features = rng.normal(1000.0, 0.01, size=(537, 6)) + rng.normal(size=(1, 6))  # a large mean, a small spread
    running = RunningStatistics()
    for start, stop in ((0, 1), (1, 200), (200, 201), (201, 537)):
        running.add(features[start:stop])
    streamed = running.result(STUB, "x")
    direct = FeatureStatistics.from_features(features, STUB, "x")
    assert streamed.num_images == 537
    np.testing.assert_allclose(streamed.mu, direct.mu, rtol=0, atol=1e-9)
    np.testing.assert_allclose(streamed.sigma, direct.sigma, rtol=1e-9, atol=1e-15)


def indexed_images(count: int) -> TensorImageDataset:
    """Image i holds i in its first two pixels (base 256), so a batch says which images it drew."""
    images = torch.zeros(count, 1, 8, 8, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count) // 256
    images[:, 0, 0, 1] = torch.arange(count) % 256
    return TensorImageDataset(images, "indexed")


def test_the_holdout_never_reaches_training():
    dataset = indexed_images(300)
    training, held = split_holdout(dataset, 40, seed=3)
    held_indices = set(held.indices.tolist())
    assert len(held_indices) == 40 and len(training) == 260
    assert held_indices.isdisjoint(training.indices.tolist())
    assert split_holdout(dataset, 40, seed=3)[1].indices.tolist() == sorted(held_indices)  # the same on resume
    seen = set()
    batches = iter(BatchStream(training, 32, seed=0, start_step=0, device="cpu"))
    for _ in range(40):  # 1,280 draws: every training image many times over
        batch = next(batches).long()
        seen.update((batch[:, 0, 0, 0] * 256 + batch[:, 0, 0, 1]).tolist())
    assert seen == set(training.indices.tolist())
    assert seen.isdisjoint(held_indices)


def test_a_holdout_that_leaves_too_little_fails_naming_the_option():
    with pytest.raises(ConfigError, match="holdout 295 leaves 5"):
        split_holdout(indexed_images(300), 295, seed=0, min_train=32)


def test_options_that_need_evaluations_fail_without_them():
    with pytest.raises(ConfigError, match="keep_best needs evaluations"):
        settings(every_steps=0).check()
    with pytest.raises(ConfigError, match="eval_metric must be one of fd, kid"):
        TrainConfig(data="shapes", out="x", eval_every=10, eval_metric="fid").validate()
    with pytest.raises(ConfigError, match="early_stop_patience needs evaluations"):
        TrainConfig(data="shapes", out="x", early_stop_patience=2).validate()


def shifted_images(offset: float):
    """make_images whose mean colour sits `offset` away from the training images' (FD ~ offset^2)."""
    def make(count: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        base = torch.rand(count, 3, 8, 8, generator=generator) * 100 + 78 + offset
        return base.clamp(0, 255).to(torch.uint8)
    return make


def training_set() -> TensorImageDataset:
    generator = torch.Generator().manual_seed(1)
    return TensorImageDataset((torch.rand(256, 3, 8, 8, generator=generator) * 100 + 78).to(torch.uint8), "train")


def test_best_follows_a_planted_score_sequence_and_early_stopping_counts_evaluations(tmp_path):
    monitor = QualityMonitor(settings(early_stop_patience=3), tmp_path, lambda: STUB, torch.device("cpu"),
                             progress=False)
    monitor.prepare(training_set(), None)
    offsets = [40, 10, 25, 2, 20, 30, 15]  # best at the 4th evaluation; three worse ones stop the run
    outcomes = [monitor.evaluate(shifted_images(o), step=10 * (i + 1), run_seconds=100.0)
                for i, o in enumerate(offsets)]
    scores = [o.record["fd"] for o in outcomes]
    assert scores[3] == min(scores) and scores[1] < scores[0]
    assert [o.improved for o in outcomes] == [True, True, False, True, False, False, False]
    assert [o.stop is not None for o in outcomes] == [False] * 6 + [True]
    assert monitor.state.best_step == 40 and "best" in outcomes[-1].stop and "step 40" in outcomes[-1].stop
    assert all(o.record["seconds"] >= 0 for o in outcomes) and outcomes[-1].record["eval_seconds_total"] > 0

    # resume at step 50: the best so far and the count since it come back, later evaluations go
    replay = QualityMonitor(settings(early_stop_patience=3), tmp_path, lambda: STUB, torch.device("cpu"),
                            progress=False)
    replay.prepare(training_set(), None)
    for i, o in enumerate(offsets[:5]):
        replay.evaluate(shifted_images(o), step=10 * (i + 1), run_seconds=100.0)
    saved_at_50 = replay.state_dict()
    resumed = QualityMonitor(settings(early_stop_patience=3), tmp_path, lambda: STUB, torch.device("cpu"),
                             progress=False)
    resumed.load_state_dict(monitor.state_dict(), resume_step=50)
    scores_of = lambda history: [(r["step"], r["fd"], r["best_step"]) for r in history]  # noqa: E731
    assert scores_of(resumed.state_dict()["history"]) == scores_of(saved_at_50["history"])
    assert (resumed.state.best_step, resumed.state.best_score) == (40, saved_at_50["best_score"])
    resumed.prepare(training_set(), None)
    assert resumed.due(60) and not resumed.due(55)
    again = [resumed.evaluate(shifted_images(o), step=10 * (i + 6), run_seconds=100.0)
             for i, o in enumerate(offsets[5:])]
    assert [o.stop is not None for o in again] == [False, True]  # the same step as without the resume


def test_the_reference_is_computed_once_per_run(tmp_path):
    calls = []

    class Counting(MeanColour):
        def features(self, images):
            calls.append(len(images))
            return super().features(images)

    extractor = Extractor("stub", Counting(), identity="stub:1")
    for _ in range(2):
        monitor = QualityMonitor(settings(), tmp_path, lambda: extractor, torch.device("cpu"), progress=False)
        monitor.prepare(training_set(), None)
    assert sum(calls) == 256  # the second run read the cached statistics
    assert len(list((tmp_path / "eval").glob("reference-*.npz"))) == 1


def test_kid_is_the_monitored_score_when_asked(tmp_path):
    monitor = QualityMonitor(settings(metric="kid", images=40), tmp_path, lambda: STUB, torch.device("cpu"),
                             progress=False)
    monitor.prepare(training_set(), None)
    near, far = (monitor.evaluate(shifted_images(o), step=s, run_seconds=1.0).record for o, s in ((1, 10), (60, 20)))
    assert near["kid"] < far["kid"] and "kid_std" in near and near["metric"] == "kid"


def monitor_on_faces(tmp_path: Path, shared_data: Path):
    """A monitor of 1,700 real anime faces trained on, 300 held out; and a maker of unseen faces."""
    faces = load_dataset(str(shared_data / "anime-faces-96px-2k.zip"), image_size=32, progress=False)
    training, held = split_holdout(faces, 300, seed=0)
    monitor = QualityMonitor(settings(images=200, holdout=300), tmp_path, lambda: STUB, torch.device("cpu"),
                             progress=False)
    monitor.prepare(training, held)

    def unseen(count, seed):  # real faces the model never trained on: as far as the baseline
        return held.images[seed % 100: seed % 100 + count]
    return monitor, training, unseen


def test_the_alarm_fires_on_copies_and_not_on_unseen_real_faces(tmp_path, shared_data):
    monitor, training, unseen = monitor_on_faces(tmp_path, shared_data)
    assert monitor.holdout_rate is not None and monitor.holdout_rate < 0.05

    def copies(count, seed):  # a model that replays its training images
        return training.images[seed: seed + count]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no alarm on real unseen faces
        honest = monitor.evaluate(unseen, step=10, run_seconds=1.0).record
    assert "memorisation_alarm" not in honest and honest["near_copy_rate"] <= 0.05
    with pytest.warns(UserWarning, match="near copies of training images"), \
            pytest.warns(UserWarning, match="closer to their nearest training images"):
        copied = monitor.evaluate(copies, step=20, run_seconds=1.0).record
    assert copied["memorisation_alarm"] and copied["near_copy_rate"] == 1.0 and copied["data_copying_warning"]
    assert "data-copying warning from step 20; near-copy alarm at step 20" in describe_summary(monitor.summary())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        monitor.evaluate(copies, step=30, run_seconds=1.0)


def test_the_data_copying_statistic_against_closed_forms():
    # two samples both closer than the one baseline distance: U = 0, so Z = (0 - 1) / sqrt(2 * 1 * 4 / 12)
    assert data_copying_z(np.array([1.0, 2.0]), np.array([3.0])) == pytest.approx(-1 / math.sqrt(2 / 3))
    assert data_copying_z(np.array([4.0, 5.0]), np.array([3.0])) == pytest.approx(1 / math.sqrt(2 / 3))
    assert data_copying_z(np.array([1.0, 3.0]), np.array([2.0])) == pytest.approx(0.0)
    # Z against the normal approximation's two-sided p-value that scipy reports (no ties, no continuity)
    from scipy.stats import mannwhitneyu, norm
    generator = np.random.default_rng(0)
    samples, baseline = generator.normal(0.18, 0.02, 1000), generator.normal(0.20, 0.02, 200)
    z = data_copying_z(samples, baseline)
    p = mannwhitneyu(samples, baseline, alternative="two-sided", method="asymptotic", use_continuity=False).pvalue
    assert z < -3 and 2 * norm.sf(abs(z)) == pytest.approx(p, rel=1e-6)


def test_the_data_copying_warning_sees_samples_nearer_the_training_set_than_unseen_faces(tmp_path, shared_data):
    monitor, training, unseen = monitor_on_faces(tmp_path, shared_data)
    generator = torch.Generator().manual_seed(0)

    def nearly_copied(count, seed):  # training faces under noise: no near copy, but closer than unseen faces
        noise = torch.randint(-40, 41, training.images[:count].shape, generator=generator)
        return (training.images[seed: seed + count].int() + noise).clamp(0, 255).to(torch.uint8)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        honest = monitor.evaluate(unseen, step=10, run_seconds=1.0).record
    assert abs(honest["data_copying_z"]) < 3 and "data_copying_warning" not in honest
    with pytest.warns(UserWarning, match="closer to their nearest training images"):
        near = monitor.evaluate(nearly_copied, step=20, run_seconds=1.0).record
    assert near["data_copying_warning"] and near["data_copying_z"] < -3
    assert near["near_copy_rate"] <= monitor.holdout_rate  # the near-copy rate alone would not have seen it
    assert "memorisation_alarm" not in near
    resumed = QualityMonitor(settings(images=200, holdout=300), tmp_path, lambda: STUB, torch.device("cpu"),
                             progress=False)
    resumed.load_state_dict(monitor.state_dict(), resume_step=20)
    assert resumed.state.copying_warned and monitor.summary()["data_copying_warning"]
    summary = resumed.summary()  # the steps come back with the history
    assert (summary["data_copying_warning_step"], summary["memorisation_alarm_step"]) == (20, None)
    assert "data-copying warning from step 20; near-copy alarm silent; 2 evaluations" in describe_summary(summary)


def test_the_alarm_test_needs_a_clear_excess():
    assert copies_clearly_exceed(0.30, 1000, 0.02, 500)
    assert not copies_clearly_exceed(0.03, 1000, 0.02, 500)  # within noise
    assert not copies_clearly_exceed(0.0, 1000, 0.0, 500)
