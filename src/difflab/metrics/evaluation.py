"""The steps the evaluation commands share: measure an input in one pass, or load its statistics.

An input is a folder or .zip of images, or (for Frechet distances) an .npz of
statistics. Whatever a command needs from a set of images (features, face detections,
thumbnails) is gathered in a single decoding pass.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.data.files import ImageRef, list_images
from difflab.errors import DataError
from difflab.metrics.afd import FaceCounter, FaceDetector
from difflab.metrics.extractors import Extractor
from difflab.metrics.features import FeatureCollector
from difflab.metrics.nearest import ThumbnailCollector
from difflab.metrics.scan import DEFAULT_BATCH_SIZE, BatchConsumer, scan_images
from difflab.metrics.statistics import FeatureStatistics, check_matches_extractor
from difflab.metrics.stats_cache import cached_statistics


# Written by `difflab sample` (cli/sample.py) beside the numbered images; its "previews"
# (the grid) are not samples and must not be measured.
SAMPLE_MANIFEST = "difflab-sample.json"


def is_statistics_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".npz"


def list_samples(source: str) -> list[ImageRef]:
    """The images of `source`, less the preview files a `difflab sample` folder lists; where the
    manifest lists its images, exactly those (stale files from an earlier run are not measured)."""
    refs = list_images(source)
    manifest_path = Path(source) / SAMPLE_MANIFEST
    if not manifest_path.is_file():
        return refs
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{manifest_path} is not readable JSON ({error}); delete it to measure every image "
                        f"in {source}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{manifest_path} is not a difflab manifest (a JSON {type(manifest).__name__})")
    listed = manifest.get("images")
    if isinstance(listed, list) and listed:
        wanted = {str((Path(source) / name).resolve()) for name in listed if isinstance(name, str)}
        chosen = [ref for ref in refs if ref.container is None and str(Path(ref.name).resolve()) in wanted]
        missing = len(wanted) - len(chosen)
        if missing:
            warnings.warn(f"{source}: {missing} of the {len(wanted)} images its {SAMPLE_MANIFEST} lists are missing; "
                          f"measuring the {len(chosen)} present", RuntimeWarning, stacklevel=2)
        if manifest.get("complete") is False:
            warnings.warn(f"{source}: {SAMPLE_MANIFEST} records an interrupted `difflab sample` run "
                          f"({len(chosen)} of {manifest.get('num_images', '?')} images)", RuntimeWarning, stacklevel=2)
        if not chosen:
            raise DataError(f"none of the images {manifest_path} lists is in {source}")
        return chosen
    previews = {str((Path(source) / name).resolve()) for name in manifest.get("previews", []) if isinstance(name, str)}
    return [ref for ref in refs if ref.container is not None or str(Path(ref.name).resolve()) not in previews]


@dataclass
class Measurement:
    """What one pass over an image set produced; fields not asked for are None."""

    source: str
    used: list[ImageRef]
    unreadable: list[tuple[str, str]]
    features: np.ndarray | None = None
    faces_found: list[bool] | None = None
    thumbnails: np.ndarray | None = None

    def summary(self) -> dict:
        return {
            "source": self.source,
            "num_images": len(self.used),
            "num_unreadable": len(self.unreadable),
            "unreadable": [{"image": label, "reason": reason} for label, reason in self.unreadable],
        }


def measure(
    source: str,
    extractor: Extractor | None = None,
    detector: FaceDetector | None = None,
    thumbnails: bool = False,
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    refs: list[ImageRef] | None = None,
) -> Measurement:
    """Read the images of `source` once, collecting features, faces and/or thumbnails."""
    refs = list_samples(source) if refs is None else refs
    feature_collector = FeatureCollector(extractor, device) if extractor else None
    face_counter = FaceCounter(detector) if detector else None
    thumbnail_collector = ThumbnailCollector() if thumbnails else None
    consumers: list[BatchConsumer] = [
        c for c in (feature_collector, face_counter, thumbnail_collector) if c is not None
    ]
    scan = scan_images(source, refs, consumers, batch_size=batch_size, progress=progress)
    return Measurement(
        source=source,
        used=scan.used,
        unreadable=scan.unreadable,
        features=feature_collector.result() if feature_collector else None,
        faces_found=face_counter.found if face_counter else None,
        thumbnails=thumbnail_collector.result() if thumbnail_collector else None,
    )


@dataclass
class StatisticsInput:
    """Statistics of one input and where they came from (file, cache or a fresh pass)."""

    statistics: FeatureStatistics
    origin: str  # "file", "cache" or "images"
    measurement: Measurement | None = None  # set when the images were read just now

    def summary(self) -> dict:
        if self.measurement is not None:
            summary = self.measurement.summary()
        else:
            summary = {"source": self.statistics.source, "num_images": self.statistics.num_images}
        return {**summary, "statistics_from": self.origin}


def statistics_of(
    source: str,
    extractor: Extractor,
    device: torch.device | str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    use_cache: bool = False,
) -> StatisticsInput:
    """Statistics of an .npz file, or of the images at `source` (from the cache when allowed)."""
    if is_statistics_file(source):
        statistics = FeatureStatistics.load(source)
        check_matches_extractor(statistics, extractor)
        return StatisticsInput(statistics, origin="file")

    refs = list_samples(source)
    measured: list[Measurement] = []  # the pass, if one was needed

    def compute() -> FeatureStatistics:
        measurement = measure(source, extractor, device=device, batch_size=batch_size, progress=progress, refs=refs)
        measured.append(measurement)
        return FeatureStatistics.from_features(measurement.features, extractor, source)

    if use_cache:
        statistics, hit = cached_statistics(source, refs, extractor, compute)
    else:
        statistics, hit = compute(), False
    return StatisticsInput(statistics, "cache" if hit else "images", None if hit else measured[0])
