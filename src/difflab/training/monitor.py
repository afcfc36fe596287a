"""Quality while training: FD and KID of the EMA weights' samples every `--eval-every` steps,
the best checkpoint, early stopping, and a memorisation alarm against held-out images.

The Keras DDIM lab tracks KID every epoch and keeps the best model; lucidrains' Trainer
computes FID as it trains. Here any feature network works (`--eval-features inception` or
FILE.py:FUNCTION for offline machines), the cost is measured and logged, and memory stays
bounded: the training set's statistics stream (`RunningStatistics`, a D x D matrix whatever
the set's size) and are computed once per run, under a key built as `difflab fid-stats`
builds its keys, and the samples of an evaluation are never kept, only their features.

Memorisation (`--holdout N`): N training images are never trained on. At each evaluation the
samples' nearest training image (RMS distance of 32x32 thumbnails, as `difflab nearest`) is
compared with the held-out images' nearest training image: real images the model never saw
set the baseline rate of "near copies" (closer than 0.05). A sample rate clearly above it
(a two-proportion z-test at z > 3, and at least twice the baseline) is a warning, once.

Copying starts before the near copies do, if they come at all: on the 2,000-image anime set
(session 12, H200, 1,419 epochs) the samples drew 20% closer to the training images than unseen
faces are and KID grew 52x, with no sample ever under the near-copy threshold. The data-copying
test of Meehan, Chaudhuri and Dasgupta (2020, "A non-parametric test to detect data-copying in
generative models") sees that: Z_U compares the two sets of nearest-neighbour distances
(Mann-Whitney U, normalised), is about N(0, 1) for a model whose samples are as far from its
training images as fresh real images are, and negative when they are closer. It is logged at
every evaluation; Z_U < -3 is a second warning, once.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from difflab.errors import ConfigError
from difflab.metrics.extractors import Extractor
from difflab.metrics.frechet import frechet_distance
from difflab.metrics.kid import kernel_distance
from difflab.metrics.nearest import DEFAULT_COPY_THRESHOLD, THUMBNAIL_SIZE, nearest_neighbours
from difflab.metrics.running import RunningStatistics
from difflab.metrics.stats_cache import fingerprint
from difflab.metrics.statistics import FeatureStatistics

KID_REFERENCE_IMAGES = 5000  # training features kept for KID: bounded, whatever the set's size
KID_SUBSETS = 20  # fewer than `difflab kid`'s 100: an evaluation must stay cheap; the spread is logged
ALARM_Z = 3.0
DATA_COPYING_Z = 3.0  # warn when the data-copying statistic Z_U falls below -DATA_COPYING_Z
BEST_FOLDER = "best"  # RUN/checkpoints/best/: the best-scoring checkpoint (--keep-best), for --weights best


@dataclass(frozen=True)
class MonitorSettings:
    """What the monitor does; built from the run's options by `from_options`."""
    every_steps: int  # 0 = no evaluations
    images: int
    metric: str  # one of config.EVAL_METRICS ("fd", "kid"): the score `best` and early stopping follow (lower is better)
    features: str  # "inception" or FILE.py:FUNCTION
    batch_size: int
    keep_best: bool
    early_stop_patience: int  # evaluations without improvement before stopping; 0 = never
    holdout: int
    copy_threshold: float = DEFAULT_COPY_THRESHOLD

    @classmethod
    def from_options(cls, options: Any) -> MonitorSettings:
        return cls(every_steps=options.eval_every, images=options.eval_images, metric=options.eval_metric,
                   features=options.eval_features, batch_size=options.eval_batch_size,
                   keep_best=options.keep_best, early_stop_patience=options.early_stop_patience,
                   holdout=options.holdout)

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0

    def check(self) -> None:
        """Options that only make sense together fail before any work."""
        if not self.enabled:
            for name, value in (("keep_best", self.keep_best), ("early_stop_patience", self.early_stop_patience)):
                if value:
                    raise ConfigError("{option} needs evaluations during training: set {option:eval_every} too",
                                      option=name)
        if self.enabled and self.images < 2:
            raise ConfigError(f"{{option}} must be at least 2 (a covariance); got {self.images}", option="eval_images")
        if self.enabled:
            from difflab.metrics.extractors import check_extractor_spec
            check_extractor_spec(self.features, option="eval_features")


@dataclass
class MonitorState:
    """What resumes with the run: the history, the best score so far and the alarm."""
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_step: int | None = None
    evaluations_since_best: int = 0
    alarm_fired: bool = False
    copying_warned: bool = False
    eval_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best_score": self.best_score, "best_step": self.best_step,
                "evaluations_since_best": self.evaluations_since_best, "alarm_fired": self.alarm_fired,
                "copying_warned": self.copying_warned, "eval_seconds": self.eval_seconds}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MonitorState:
        return cls(**{k: values[k] for k in cls().to_dict() if k in values})


@dataclass
class Evaluation:
    """One evaluation's outcome, as the loop acts on it."""
    record: dict[str, Any]
    improved: bool
    stop: str | None  # a reason to stop early, or None


@dataclass
class Reference:
    """The training set as the monitor compares with it; computed once per run."""
    statistics: FeatureStatistics
    kid_features: np.ndarray  # (<= KID_REFERENCE_IMAGES, D)
    thumbnails: np.ndarray | None  # (N, 32*32*3) uint8 of every training image, when held-out images exist
    key: str


def features_of(extractor: Extractor, images: Tensor, device: torch.device) -> np.ndarray:
    """Features of uint8 (B, C, H, W) images: the [0, 1] RGB input `difflab eval` gives the
    network for the same pixels (grayscale repeated to three channels, as PIL's convert)."""
    pixels = images.to(device).float().div(255)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    with torch.no_grad():
        output = extractor.network.features(pixels)
    values = output.float().cpu().numpy() if torch.is_tensor(output) else np.asarray(output, dtype=np.float32)
    return values.astype(np.float32)


def thumbnails_of(images: Tensor) -> np.ndarray:
    """(B, 32*32*3) uint8 thumbnails, RGB, as `difflab nearest` compares them. Resized in one batched
    antialiased bilinear pass (not PIL's, image by image: 60,000 thumbnails take seconds, not
    minutes); samples and held-out images go through the same pass, so the comparison is fair."""
    pixels = images.float()
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    if pixels.shape[-2:] != (THUMBNAIL_SIZE, THUMBNAIL_SIZE):
        pixels = torch.nn.functional.interpolate(pixels, size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE), mode="bilinear",
                                                 antialias=True, align_corners=False)
    return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).reshape(len(images), -1).cpu().numpy()


def nearest_rms(queries: np.ndarray, training: np.ndarray) -> np.ndarray:
    """Each query thumbnail's RMS distance (pixels in [0, 1]) to its nearest training thumbnail."""
    _, distances = nearest_neighbours(queries, training)
    return distances / 255 / math.sqrt(queries.shape[1])


def near_copy_rate(rms: np.ndarray, threshold: float) -> tuple[float, float]:
    """(share of the distances `rms` under `threshold`, their median)."""
    return float((rms < threshold).mean()), float(np.median(rms))


def data_copying_z(sample_distances: np.ndarray, baseline_distances: np.ndarray) -> float:
    """Meehan et al. (2020)'s Z_U: the Mann-Whitney U of the samples' nearest-training distances
    against held-out real images', centred and scaled by its null mean m n / 2 and standard deviation
    sqrt(m n (m + n + 1) / 12). Negative: the samples are closer to the training set than unseen
    data are. scipy gives U; the normalisation is the paper's."""
    from scipy.stats import mannwhitneyu
    m, n = len(sample_distances), len(baseline_distances)
    u = mannwhitneyu(sample_distances, baseline_distances, alternative="two-sided").statistic
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def copies_clearly_exceed(sample_rate: float, samples: int, baseline_rate: float, baseline: int) -> bool:
    """A two-proportion z-test (pooled) at z > ALARM_Z, and at least twice the baseline rate."""
    pooled = (sample_rate * samples + baseline_rate * baseline) / (samples + baseline)
    spread = math.sqrt(max(pooled * (1 - pooled) * (1 / samples + 1 / baseline), 1e-12))
    return (sample_rate - baseline_rate) / spread > ALARM_Z and sample_rate >= 2 * baseline_rate


def _batches(dataset: Any, batch_size: int):
    images = getattr(dataset, "images", None)
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        yield images[start:stop] if images is not None else torch.stack([dataset[i] for i in range(start, stop)])


def reference_key(dataset: Any, extractor: Extractor, holdout: int, seed: int) -> str:
    """What the reference depends on: the images (for files, as `difflab fid-stats` keys them:
    each file's name, size and modification time; for built-in sets, their pixels), the
    training size and channels the images were brought to, the split, and the extractor."""
    digest = hashlib.sha256(f"{extractor.identity}\0{dataset.image_size}\0{dataset.channels}\0"
                            f"{holdout}\0{seed}\0{len(dataset)}\n".encode())
    try:
        digest.update(fingerprint(dataset.refs, extractor).encode())
    except OSError:  # built-in sets have no files: key their pixels
        images = getattr(dataset, "images", None)
        if images is None:
            raise
        digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class QualityMonitor:
    """Evaluations during training. The loop calls `due(step)`, then `evaluate(...)` with a
    function that makes images; `state()` and `load_state()` carry it across a resume."""

    def __init__(self, settings: MonitorSettings, run_dir: Path, extractor_factory: Callable[[], Extractor],
                 device: torch.device, seed: int = 0, progress: bool = True) -> None:
        self.settings, self.run_dir, self.device, self.seed = settings, Path(run_dir), device, seed
        self._extractor_factory = extractor_factory
        self._extractor: Extractor | None = None
        self.reference: Reference | None = None
        self.holdout_rate: float | None = None
        self.holdout_median: float | None = None
        self.holdout_distances: np.ndarray | None = None
        self.holdout_count = 0
        self.state = MonitorState()
        self.progress = progress

    @property
    def extractor(self) -> Extractor:
        if self._extractor is None:
            self._extractor = self._extractor_factory()
        return self._extractor

    def due(self, step: int) -> bool:
        return self.settings.enabled and step > 0 and step % self.settings.every_steps == 0

    # ---- the training set, once per run ------------------------------------------------------------
    def prepare(self, training: Any, held_out: Any | None) -> None:
        """Statistics of the images trained on (cached in the run folder under their key), and the
        held-out images' near-copy baseline."""
        started = time.monotonic()
        key = reference_key(training, self.extractor, self.settings.holdout, self.seed)
        path = self.run_dir / "eval" / f"reference-{key}.npz"
        want_thumbnails = held_out is not None
        self.reference = self._load_reference(path, key, want_thumbnails) or self._compute_reference(
            training, path, key, want_thumbnails)
        if held_out is not None and self.reference.thumbnails is not None:
            held_thumbnails = np.concatenate([thumbnails_of(b) for b in _batches(held_out, self.settings.batch_size)])
            self.holdout_distances = nearest_rms(held_thumbnails, self.reference.thumbnails)
            self.holdout_rate, self.holdout_median = near_copy_rate(self.holdout_distances, self.settings.copy_threshold)
            self.holdout_count = len(held_thumbnails)
        self.state.eval_seconds += time.monotonic() - started

    def _load_reference(self, path: Path, key: str, want_thumbnails: bool) -> Reference | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                thumbnails = stored["thumbnails"] if "thumbnails" in stored else None
                if want_thumbnails and thumbnails is None:
                    return None
                statistics = FeatureStatistics(stored["mu"], stored["sigma"], int(stored["num_images"]),
                                               self.extractor.name, "training images")
                return Reference(statistics, stored["kid_features"], thumbnails, key)
        except (OSError, ValueError, KeyError):
            return None  # unreadable: computed again, and rewritten

    def _compute_reference(self, training: Any, path: Path, key: str, want_thumbnails: bool) -> Reference:
        from tqdm.auto import tqdm
        running = RunningStatistics()
        chosen = np.sort(np.random.default_rng(self.seed).choice(
            len(training), min(len(training), KID_REFERENCE_IMAGES), replace=False))
        kid_rows, thumbnails, offset = [], [], 0
        bar = tqdm(total=len(training), desc="monitor: training-set statistics", unit="img", leave=False,
                   disable=not self.progress)
        for batch in _batches(training, self.settings.batch_size):
            features = features_of(self.extractor, batch, self.device)
            running.add(features)
            inside = chosen[(chosen >= offset) & (chosen < offset + len(batch))] - offset
            kid_rows.append(features[inside])
            if want_thumbnails:
                thumbnails.append(thumbnails_of(batch))
            offset += len(batch)
            bar.update(len(batch))
        bar.close()
        statistics = running.result(self.extractor, "training images")
        reference = Reference(statistics, np.concatenate(kid_rows), np.concatenate(thumbnails) if thumbnails else None,
                              key)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"mu": statistics.mu, "sigma": statistics.sigma, "num_images": statistics.num_images,
                  "kid_features": reference.kid_features, "key": key}
        if reference.thumbnails is not None:
            arrays["thumbnails"] = reference.thumbnails
        partial = path.with_name(path.stem + ".part.npz")
        np.savez(partial, **arrays)
        os.replace(partial, path)  # never a truncated cache file
        return reference

    # ---- one evaluation ----------------------------------------------------------------------------
    def evaluate(self, make_images: Callable[[int, int], Tensor], step: int, run_seconds: float) -> Evaluation:
        """Score `settings.images` samples from `make_images(count, seed)` (uint8 (B, C, H, W));
        `run_seconds`: the run's time so far, evaluations included (for the share they took)."""
        if self.reference is None:
            raise RuntimeError("QualityMonitor.prepare() must run before evaluate()")
        started = time.monotonic()
        settings = self.settings
        running, kept, thumbnails, made = RunningStatistics(), [], [], 0
        while made < settings.images:
            count = min(settings.batch_size, settings.images - made)
            images = make_images(count, self.seed + made)
            features = features_of(self.extractor, images, self.device)
            running.add(features)
            if settings.metric == "kid":
                kept.append(features)
            if self.holdout_rate is not None:
                thumbnails.append(thumbnails_of(images))
            made += count
        statistics = running.result(self.extractor, f"samples at step {step}")
        reference = self.reference.statistics
        record: dict[str, Any] = {"fd": frechet_distance(statistics.mu, statistics.sigma, reference.mu, reference.sigma),
                                  "images": made}
        if settings.metric == "kid":
            kid = kernel_distance(np.concatenate(kept), self.reference.kid_features, num_subsets=KID_SUBSETS,
                                  seed=step)
            record.update(kid=kid.mean, kid_std=kid.std)
        if self.holdout_rate is not None:
            distances = nearest_rms(np.concatenate(thumbnails), self.reference.thumbnails)
            rate, median = near_copy_rate(distances, settings.copy_threshold)
            copying_z = data_copying_z(distances, self.holdout_distances)
            record.update(near_copy_rate=rate, nearest_median=median, holdout_near_copy_rate=self.holdout_rate,
                          holdout_nearest_median=self.holdout_median, data_copying_z=copying_z)
            if not self.state.alarm_fired and copies_clearly_exceed(rate, made, self.holdout_rate, self.holdout_count):
                self.state.alarm_fired = True
                record["memorisation_alarm"] = True
                warnings.warn(f"difflab: at step {step}, {rate:.1%} of the samples are near copies of training "
                              f"images (RMS < {settings.copy_threshold}), against {self.holdout_rate:.1%} of "
                              "held-out real images: the model has started to copy its training set. FD and KID "
                              "against the training images cannot see it (copies score well, so the best "
                              "checkpoint may copy too): a checkpoint from before this step, or more data, "
                              "avoids it", stacklevel=2)
            if not self.state.copying_warned and copying_z < -DATA_COPYING_Z:
                self.state.copying_warned = True
                record["data_copying_warning"] = True
                warnings.warn(f"difflab: at step {step}, the samples are closer to their nearest training images "
                              f"than held-out real images are (median RMS {median:.4f} against "
                              f"{self.holdout_median:.4f}; data-copying test Z_U = {copying_z:.1f}, Meehan et al. "
                              "2020): the model has begun to copy its training set, or its samples have lost "
                              "diversity, usually while KID worsens and before any near copy. Watch KID and "
                              "the near-copy rate; a checkpoint from before this step, or more data, avoids it",
                              stacklevel=2)
        seconds = time.monotonic() - started
        self.state.eval_seconds += seconds
        improved = self._count(float(record[settings.metric]), step)
        record.update(step=step, run_seconds=run_seconds, seconds=seconds,
                      eval_seconds_total=self.state.eval_seconds,
                      eval_share=min(1.0, self.state.eval_seconds / max(run_seconds, 1e-9)),
                      best_step=self.state.best_step, metric=settings.metric, features=self.extractor.name)
        self.state.history.append(record)
        stop = None
        patience = settings.early_stop_patience
        if patience and self.state.evaluations_since_best >= patience:
            stop = (f"{settings.metric.upper()} has not improved for {patience} evaluations (best "
                    f"{self.state.best_score:.4g} at step {self.state.best_step})")
        return Evaluation(record, improved, stop)

    # ---- resume and outputs ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, values: dict[str, Any] | None, resume_step: int) -> None:
        """The state saved at `resume_step`; evaluations logged after it are dropped with the weights."""
        saved = MonitorState.from_dict(values or {})
        self.state = MonitorState(eval_seconds=saved.eval_seconds)
        for record in (r for r in saved.history if r["step"] <= resume_step):  # replayed: best and counts follow
            self._count(float(record[self.settings.metric]), record["step"])
            self.state.alarm_fired |= bool(record.get("memorisation_alarm"))
            self.state.copying_warned |= bool(record.get("data_copying_warning"))
            self.state.history.append(record)

    def _count(self, score: float, step: int) -> bool:
        """Book one evaluation's score; whether it is the best so far (lower is better)."""
        improved = self.state.best_score is None or score < self.state.best_score
        if improved:
            self.state.best_score, self.state.best_step, self.state.evaluations_since_best = score, step, 0
        else:
            self.state.evaluations_since_best += 1
        return improved

    def plot(self, path: Path) -> Path | None:
        """quality.png: the monitored score (and FD) against step and training time."""
        history = self.state.history
        if not history:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter

        def thousands(step: float, _position) -> str:  # 39k, not 39000 (five-digit ticks overlap)
            return f"{step / 1000:g}k" if abs(step) >= 1000 else f"{step:g}"

        names = [n for n in ("fd", "kid", "near_copy_rate", "data_copying_z") if n in history[0]]
        figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.0), dpi=110, squeeze=False)
        for axis, name in zip(axes[0], names):
            axis.plot([r["step"] for r in history], [r[name] for r in history], marker="o", linewidth=1)
            if name == "near_copy_rate" and "holdout_near_copy_rate" in history[0]:
                baseline = history[0]["holdout_near_copy_rate"]
                axis.axhline(baseline, color="tab:gray", linestyle="--", label="held-out real images")
                axis.legend(fontsize=7)
                axis.set_ylim(0.0, max(0.01, 1.25 * max([baseline] + [r[name] for r in history])))  # a rate
            if name == "data_copying_z":
                axis.axhline(-DATA_COPYING_Z, color="tab:red", linestyle="--", label="warning")
                axis.axhline(0.0, color="tab:gray", linewidth=0.8)
                axis.legend(fontsize=7)
            if name == self.settings.metric and self.state.best_step is not None:
                axis.axvline(self.state.best_step, color="tab:green", alpha=0.4, label="best")
            axis.set_title(f"{name} ({self.extractor.name})" if name in ("fd", "kid") else name, fontsize=9)
            axis.set_xlabel("step", fontsize=8)
            axis.xaxis.set_major_formatter(FuncFormatter(thousands))
            axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)
        return Path(path)

    def summary(self) -> dict[str, Any]:
        return {"evaluations": len(self.state.history), "best_step": self.state.best_step,
                "best_score": self.state.best_score, "metric": self.settings.metric,
                "eval_seconds": round(self.state.eval_seconds, 2),
                "holdout": any("near_copy_rate" in record for record in self.state.history),
                "memorisation_alarm": self.state.alarm_fired, "data_copying_warning": self.state.copying_warned,
                "memorisation_alarm_step": self._first_step_with("memorisation_alarm"),
                "data_copying_warning_step": self._first_step_with("data_copying_warning")}

    def _first_step_with(self, flag: str) -> int | None:
        return next((record["step"] for record in self.state.history if record.get(flag)), None)


def describe_summary(summary: dict[str, Any]) -> str:
    """The run's last word on quality (`difflab train` prints it): the best score and where it is
    kept, and what the memorisation checks saw."""
    if not summary.get("evaluations"):
        return "no evaluation ran"
    parts = [f"best {summary['metric'].upper()} {summary['best_score']:.4g} at step {summary['best_step']:,}"
             + (" (kept: sample it with --weights best)" if summary.get("best_checkpoint") else "")]
    if summary.get("holdout"):
        copying, alarm = summary.get("data_copying_warning_step"), summary.get("memorisation_alarm_step")
        parts.append(f"data-copying warning from step {copying:,}" if copying is not None else "no data-copying warning")
        parts.append(f"near-copy alarm at step {alarm:,}" if alarm is not None else "near-copy alarm silent")
    parts.append(f"{summary['evaluations']} evaluations, {summary['eval_seconds']:.0f} s")
    return "; ".join(parts)


def monitor_extractor(spec: str, device: torch.device) -> Extractor:
    """The feature network of `--eval-features`, on the training device."""
    from difflab.metrics.extractors import load_extractor
    return load_extractor(spec, device=device, option="eval_features")


def best_checkpoint_folder(run: str | Path) -> Path:
    """Where a run keeps its best checkpoint; a ConfigError naming the options when it kept none."""
    run = Path(run)
    folder = (run if run.name == "checkpoints" else run / "checkpoints") / BEST_FOLDER
    if not folder.is_dir() or not any(folder.glob("ckpt-*.safetensors")):
        raise ConfigError(f"{{option}} best: {run} has no best checkpoint; only runs trained with "
                          "{option:keep_best} and {option:eval_every} keep one", option="weights")
    return folder


def write_holdout_list(run_dir: Path, held_out: Any) -> None:
    """holdout.json: which images were never trained on (their names), for the user to check."""
    names = [str(ref) for ref in held_out.refs]
    (Path(run_dir) / "holdout.json").write_text(json.dumps({"count": len(names), "images": names}, indent=1) + "\n")
