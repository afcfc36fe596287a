"""Scoring folders of generated images with the evaluation metrics (difflab.metrics).

The real set is read once and every folder is compared with it. A metric that cannot be
computed (too few images for a Frechet distance, no OpenCV for the face detector, a
statistics file where KID needs images) is returned with value None and the reason:
nothing is estimated or filled in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from difflab.errors import ConfigError, DataError
from difflab.metrics.afd import FaceDetector, load_detector
from difflab.metrics.evaluation import Measurement, is_statistics_file, measure, statistics_of
from difflab.metrics.extractors import Extractor, load_extractor
from difflab.metrics.kid import DEFAULT_NUM_SUBSETS, DEFAULT_SUBSET_SIZE, kernel_distance
from difflab.metrics.statistics import FeatureStatistics

AFD_MODES = ("auto", "yes", "no")
Metric = dict[str, Any]  # {"value": float | None, "reason": why None, ...details}


@dataclass(frozen=True)
class ScoringOptions:
    """The evaluation options that compare and fuse share with `difflab eval`."""

    features: str = "inception"
    inception_weights: str | None = None
    afd: str = "auto"  # auto: measure the AFD rate when the detector can be loaded
    detector: str = "cascade"
    detector_weights: str | None = None
    device: torch.device | str = "cpu"
    batch_size: int = 50
    kid_subsets: int = DEFAULT_NUM_SUBSETS
    kid_subset_size: int = DEFAULT_SUBSET_SIZE
    progress: bool = True


def missing(reason: str, **details: Any) -> Metric:
    return {"value": None, "reason": reason, **details}


def optional_detector(options: ScoringOptions) -> tuple[FaceDetector | None, str | None]:
    """The face detector, or None and why not (auto mode, e.g. without OpenCV or offline)."""
    if options.afd not in AFD_MODES:
        raise ConfigError(f"--afd must be one of {', '.join(AFD_MODES)}; got {options.afd!r}")
    if options.afd == "no":
        return None, "not requested (--afd no)"
    try:  # load_detector checks OpenCV first, so its message names what is missing
        return load_detector(options.detector, options.detector_weights), None
    except (ConfigError, DataError) as error:
        if options.afd == "yes":
            raise  # auto: the reason is shown in place of the rate
        return None, f"no face detector: {str(error).splitlines()[0]}"


class Scorer:
    """Measures the reference once (features, faces), then scores any number of folders."""

    def __init__(self, reference: str, options: ScoringOptions) -> None:
        self.options = options
        self.extractor: Extractor = load_extractor(options.features, options.device, options.inception_weights)
        self.detector, self.detector_note = optional_detector(options)
        self.reference_source = reference
        self.reference: Measurement | None = None
        if is_statistics_file(reference):
            self.reference_statistics = statistics_of(reference, self.extractor, options.device,
                                                      options.batch_size, options.progress).statistics
        else:
            self.reference = self._measure(reference)
            self.reference_statistics = FeatureStatistics.from_features(self.reference.features, self.extractor,
                                                                        reference)

    @property
    def distance_name(self) -> str:
        return self.extractor.distance_name

    @property
    def reference_afd_rate(self) -> float | None:
        """The detector's rate on the real images: what a generated rate is read against."""
        if self.detector is None or self.reference is None:
            return None
        return sum(self.reference.faces_found) / len(self.reference.faces_found)

    def describe(self) -> dict[str, Any]:
        """What every score is measured against, for the results' header."""
        return {
            "reference": self.reference_source,
            "reference_images": self.reference_statistics.num_images,
            "extractor": self.extractor.name,
            "distance": self.distance_name,
            "detector": self.detector.name if self.detector is not None else None,
            "detector_note": self.detector_note,
            "reference_afd_rate": self.reference_afd_rate,
        }

    def score(self, folder: str) -> dict[str, Any]:
        generated = self._measure(folder)
        return {"num_images": len(generated.used), "distance": self._distance(generated),
                "kid": self._kid(generated), "afd": self._afd(generated)}

    def _measure(self, source: str) -> Measurement:
        return measure(source, self.extractor, detector=self.detector, device=self.options.device,
                       batch_size=self.options.batch_size, progress=self.options.progress)

    def _distance(self, generated: Measurement) -> Metric:
        details = {"name": self.distance_name, "extractor": self.extractor.name}
        try:
            # Named generically, so the same reason reads the same for every folder scored.
            statistics = FeatureStatistics.from_features(generated.features, self.extractor, "the generated set")
            return {"value": statistics.frechet_distance(self.reference_statistics), **details}
        except DataError as error:
            return missing(str(error), **details)

    def _kid(self, generated: Measurement) -> Metric:
        if self.reference is None:
            return missing("the reference is a statistics file; KID needs its images")
        try:
            kid = kernel_distance(generated.features, self.reference.features, self.options.kid_subsets,
                                  self.options.kid_subset_size)
        except DataError as error:
            return missing(str(error))
        return {"value": kid.mean, "std": kid.std, "subset_size": kid.subset_size, "num_subsets": kid.num_subsets}

    def _afd(self, generated: Measurement) -> Metric:
        if self.detector is None:
            return missing(self.detector_note or "no face detector")
        rate = sum(generated.faces_found) / len(generated.faces_found)
        return {"value": rate, "reference_rate": self.reference_afd_rate, "detector": self.detector.name}


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
    return lines
