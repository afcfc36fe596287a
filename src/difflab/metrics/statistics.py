"""Feature statistics (mean and covariance): all a Frechet distance needs of one image set.

Saved as .npz with pytorch-fid's keys `mu` and `sigma`, so files move freely between
the two tools; difflab adds the number of images and the extractor's name, which lets
it refuse to compare statistics from different feature spaces.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from difflab.errors import OPTION, DataError
from difflab.metrics.extractors import INCEPTION_NAME, Extractor
from difflab.metrics.frechet import frechet_distance


@dataclass(frozen=True)
class FeatureStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    num_images: int | None  # None: a pytorch-fid file, which does not record it
    extractor: str | None  # None: a pytorch-fid file (its Inception, as far as we can tell)
    source: str

    @property
    def dims(self) -> int:
        return self.mu.shape[0]

    @classmethod
    def from_features(cls, features: np.ndarray, extractor: Extractor, source: str) -> FeatureStatistics:
        """pytorch-fid's estimates: float64 mean and unbiased (N - 1) covariance."""
        if len(features) < 2:
            raise DataError(f"{source}: a covariance needs at least 2 images, got {len(features)}")
        features = features.astype(np.float64)
        if not np.isfinite(features).all():
            raise DataError(f"{source}: some features are NaN or infinite; their statistics would be meaningless")
        return cls(np.mean(features, axis=0), np.cov(features, rowvar=False), len(features), extractor.name, source)

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(
            path, mu=self.mu, sigma=self.sigma, num_images=self.num_images or 0,
            extractor=self.extractor or "", source=self.source,
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStatistics:
        try:
            with np.load(path, allow_pickle=False) as stored:
                if "mu" not in stored or "sigma" not in stored:
                    raise DataError(f"{path} holds no feature statistics (no 'mu' and 'sigma' arrays)")
                mu, sigma = stored["mu"], stored["sigma"]
                num_images = int(stored["num_images"]) if "num_images" in stored else 0
                extractor = str(stored["extractor"]) if "extractor" in stored else ""
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DataError(f"cannot read statistics file {path}: {error}") from error
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise DataError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not a mean and its covariance")
        if not (np.issubdtype(mu.dtype, np.number) and np.issubdtype(sigma.dtype, np.number)):
            raise DataError(f"{path}: mu and sigma must be numeric arrays (got {mu.dtype} and {sigma.dtype})")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise DataError(f"{path}: its statistics hold NaN or infinite values; recompute them with `difflab fid-stats`")
        return cls(mu, sigma, num_images or None, extractor or None, source=str(path))

    def check_comparable(self, other: FeatureStatistics) -> None:
        """Refuse to compare statistics from different feature spaces: the number would be meaningless."""
        if self.extractor and other.extractor and self.extractor != other.extractor:
            raise DataError(
                f"{self.source} was measured with {self.extractor} features but {other.source} with "
                f"{other.extractor}; compute both with the same {OPTION}", option="features"
            )
        if self.dims != other.dims:
            raise DataError(
                f"{self.source} has {self.dims}-d features but {other.source} has {other.dims}-d; "
                "they come from different feature extractors"
            )

    def check_enough_images(self) -> None:
        """With no more images than dimensions the covariance is singular and FD is mostly bias."""
        if self.num_images is not None and self.num_images <= self.dims:
            raise DataError(
                f"{self.source}: {self.num_images} images are too few for a Frechet distance in "
                f"{self.dims}-d features (the covariance needs more than {self.dims} images to be "
                "full rank). Use more images, or KID (`difflab kid`), which is unbiased at any sample size"
            )

    def frechet_distance(self, other: FeatureStatistics) -> float:
        self.check_comparable(other)
        self.check_enough_images()
        other.check_enough_images()
        for statistics in (self, other):
            if not (np.isfinite(statistics.mu).all() and np.isfinite(statistics.sigma).all()):
                raise DataError(f"{statistics.source}: its statistics hold NaN or infinite values; no distance "
                                "can be computed from them")
        distance = frechet_distance(self.mu, self.sigma, other.mu, other.sigma)
        if not np.isfinite(distance):
            raise DataError(f"the Frechet distance between {self.source} and {other.source} is not finite "
                            f"({distance}); the covariances are numerically unusable (too few images?)")
        return distance


def check_matches_extractor(statistics: FeatureStatistics, extractor: Extractor) -> None:
    """Statistics loaded from a file must come from the extractor the other side is measured with."""
    recorded = statistics.extractor or INCEPTION_NAME  # pytorch-fid files hold Inception statistics
    if recorded != extractor.name:
        origin = statistics.extractor or "pytorch-fid's Inception (no extractor recorded)"
        raise DataError(
            f"{statistics.source} holds statistics of {origin} features, but {OPTION} is "
            f"{extractor.name}; recompute them with that {OPTION} (`difflab fid-stats`) or pass the images", option="features"
        )
