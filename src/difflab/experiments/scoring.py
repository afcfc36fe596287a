"""The scoring core: generated images against a real set, as `difflab eval`, `compare` and `fuse` do it.

The real set is read once and every generated set is compared with it. One failure policy
holds for every command that scores:

* An unreadable image is skipped and counted (`num_unreadable`); a set of which nothing can be
  read is a DataError.
* A metric that cannot be computed (too few images for a Frechet distance or for KID, a
  statistics file where KID needs images) is returned with value None and the reason: nothing
  is estimated or filled in, and the other metrics still count.
* The face detector, with afd "auto": the default detector (the cascade, no weights file named)
  that cannot be loaded here (no OpenCV, offline without the cascade file) gives AFD as None with
  the reason; a detector or a weights file the caller named, or afd "on", must load, or the error
  is raised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from difflab.errors import OPTION, ConfigError, DataError
from difflab.metrics.afd import FaceDetector, load_detector
from difflab.metrics.evaluation import Measurement, is_statistics_file, measure, statistics_of
from difflab.metrics.extractors import Extractor, load_extractor
from difflab.metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE, kernel_distance
from difflab.metrics.statistics import FeatureStatistics

AFD_MODES = ("auto", "on", "off")
AFD_RENAMED = {"yes": "on", "no": "off"}  # the old spellings, accepted for one release
DEFAULT_DETECTOR = "cascade"
DEFAULT_FEATURE_BATCH_SIZE = 50
GENERATED = "the generated set"  # how a reason names the set scored, unless told otherwise
Metric = dict[str, Any]  # {"value": float | None, "reason": why None, ...details}


def check_feature_batch_size(feature_batch_size: int) -> None:
    if feature_batch_size < 1:
        raise ConfigError(f"{OPTION} must be at least 1; got {feature_batch_size}", option="feature_batch_size")


def check_kid_options(kid_subsets: int, kid_subset_size: int) -> None:
    if kid_subsets < 1:
        raise ConfigError(f"{OPTION} must be at least 1; got {kid_subsets}", option="kid_subsets")
    if kid_subset_size < 2:
        raise ConfigError(f"{OPTION} must be at least 2; got {kid_subset_size}", option="kid_subset_size")


@dataclass(frozen=True)
class ScoringOptions:
    """How eval, compare and fuse score: the feature space, the face detector, KID's subsets.
    Checked when made, so a bad value fails before any image is generated or read."""

    features: str = "inception"
    inception_weights: str | None = None
    afd: str = "auto"  # auto: measure the AFD rate when the default detector can be loaded; on; off
    detector: str = DEFAULT_DETECTOR
    detector_weights: str | None = None
    device: torch.device | str = "cpu"
    feature_batch_size: int = DEFAULT_FEATURE_BATCH_SIZE
    kid_subsets: int = DEFAULT_NUM_SUBSETS
    kid_subset_size: int = DEFAULT_SUBSET_SIZE
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "afd", AFD_RENAMED.get(self.afd, self.afd))
        if self.afd not in AFD_MODES:
            raise ConfigError(f"{OPTION} must be one of {', '.join(AFD_MODES)}; got {self.afd!r}", option="afd")
        check_feature_batch_size(self.feature_batch_size)
        check_kid_options(self.kid_subsets, self.kid_subset_size)


def missing(reason: str, **details: Any) -> Metric:
    return {"value": None, "reason": reason, **details}


def optional_detector(options: ScoringOptions) -> tuple[FaceDetector | None, str | None]:
    """The face detector, or None and why not (see the module's failure policy)."""
    if options.afd == "off":
        return None, "AFD not requested"
    named = options.afd == "on" or options.detector != DEFAULT_DETECTOR or options.detector_weights is not None
    try:  # load_detector checks OpenCV first, so its message names what is missing
        return load_detector(options.detector, options.detector_weights, device=str(options.device)), None
    except (ConfigError, DataError) as error:
        if named:
            raise  # what the caller named must work
        return None, f"AFD skipped: {str(error).splitlines()[0]}"


class Scorer:
    """Measures the real set once (features, faces, and thumbnails if asked for), then scores
    any number of generated sets against it."""

    def __init__(self, real: str, options: ScoringOptions, thumbnails: bool = False) -> None:
        self.options = options
        self.thumbnails = thumbnails
        self.extractor: Extractor = load_extractor(options.features, options.device, options.inception_weights)
        self.detector, self.detector_note = optional_detector(options)
        self.real_source = real
        self.real: Measurement | None = None  # None: the real set is a statistics file
        if is_statistics_file(real):
            statistics = statistics_of(real, self.extractor, options.device, options.feature_batch_size,
                                       options.progress).statistics
            self.real_summary = {"source": real, "num_images": statistics.num_images, "statistics_from": "file"}
        else:
            self.real = self.measure(real)
            statistics = FeatureStatistics.from_features(self.real.features, self.extractor, real)
            self.real_summary = self.real.summary()
        self.real_statistics = statistics

    @property
    def distance_name(self) -> str:
        return self.extractor.distance_name

    @property
    def real_afd_rate(self) -> float | None:
        """The detector's rate on the real images: what a generated rate is read against."""
        if self.detector is None or self.real is None:
            return None
        return sum(self.real.faces_found) / len(self.real.faces_found)

    def describe(self) -> dict[str, Any]:
        """What every score is measured against, for the results' header."""
        return {
            "reference": self.real_source,
            "reference_images": self.real_statistics.num_images,
            "reference_unreadable": len(self.real.unreadable) if self.real is not None else 0,
            "extractor": self.extractor.name,
            "distance": self.distance_name,
            "detector": self.detector.name if self.detector is not None else None,
            "detector_note": self.detector_note,
            "reference_afd_rate": self.real_afd_rate,
        }

    def measure(self, source: str) -> Measurement:
        """One pass over `source`: features, faces (with a detector) and thumbnails (if asked for)."""
        return measure(source, self.extractor, detector=self.detector, thumbnails=self.thumbnails,
                       device=self.options.device, batch_size=self.options.feature_batch_size,
                       progress=self.options.progress)

    def score(self, folder: str) -> dict[str, Any]:
        """The scores of the images in `folder` (compare's and fuse's record of a set)."""
        generated = self.measure(folder)
        return {"num_images": len(generated.used), "num_unreadable": len(generated.unreadable),
                **self.scores(generated)}

    def scores(self, generated: Measurement, name: str = GENERATED) -> dict[str, Metric]:
        """The distance, KID and AFD rate of a measured set; `name` is how a reason calls it."""
        return {"distance": self._distance(generated, name), "kid": self._kid(generated), "afd": self._afd(generated)}

    def _distance(self, generated: Measurement, name: str) -> Metric:
        details = {"name": self.distance_name, "extractor": self.extractor.name}
        try:
            statistics = FeatureStatistics.from_features(generated.features, self.extractor, name)
            return {"value": statistics.frechet_distance(self.real_statistics), **details}
        except DataError as error:
            return missing(str(error), **details)

    def _kid(self, generated: Measurement) -> Metric:
        if self.real is None:
            return missing("the real set is a statistics file; KID needs its images")
        try:
            kid = kernel_distance(generated.features, self.real.features, self.options.kid_subsets,
                                  self.options.kid_subset_size)
        except DataError as error:
            return missing(str(error))
        return {"value": kid.mean, "std": kid.std, "subset_size": kid.subset_size, "num_subsets": kid.num_subsets}

    def _afd(self, generated: Measurement) -> Metric:
        if self.detector is None:
            return missing(self.detector_note or "no face detector")
        found = generated.faces_found
        return {"value": sum(found) / len(found), "reference_rate": self.real_afd_rate, "detector": self.detector.name,
                "num_with_face": int(sum(found)), "num_images": len(found)}


def score_lines(scores: dict[str, Any], scorer: Scorer) -> list[str]:
    """The scores as lines a person reads; a missing value says why."""
    labels = {"distance": f"{scorer.distance_name} ({scorer.extractor.name})", "kid": "KID", "afd": "AFD rate"}
    lines = []
    for key, label in labels.items():
        metric = scores[key]
        if metric["value"] is None:
            lines.append(f"{label}: n/a ({metric['reason']})")
        elif key == "kid":
            lines.append(f"{label}: {metric['value']:.4f} ± {metric['std']:.4f}")
        elif key == "afd":
            real = metric.get("reference_rate")
            real_text = f" (real images: {real:.1%})" if real is not None else ""
            lines.append(f"{label}: {metric['value']:.1%}{real_text}")
        else:
            lines.append(f"{label}: {metric['value']:.3f}")
    if scores.get("num_unreadable"):
        lines.append(f"skipped {scores['num_unreadable']} unreadable image(s)")
    return lines
