"""Feature statistics that stream: the mean and covariance of a set seen one batch at a time, in
memory that does not grow with the number of images (a D x D matrix, whatever N is).

Batches are merged with Chan, Golub and LeVeque's pairwise update ("Updating formulae and a
pairwise algorithm for computing sample variances", 1979), in float64: the sum of squared
deviations of the union is M2_a + M2_b + delta delta^T n_a n_b / (n_a + n_b), so no sum of
squares of raw features is ever formed (which loses the covariance to cancellation when the
mean is large against the spread). The result equals `FeatureStatistics.from_features` on the
concatenated features: the same unbiased (N - 1) covariance as pytorch-fid's.
"""
from __future__ import annotations

import numpy as np

from difflab.errors import DataError
from difflab.metrics.extractors import Extractor
from difflab.metrics.statistics import FeatureStatistics


class RunningStatistics:
    """Mean and covariance of (N, D) features added in batches."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None  # sum over images of (x - mean)(x - mean)^T

    def add(self, features: np.ndarray) -> None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise DataError(f"features must be (N, D); got shape {features.shape}")
        if len(features) == 0:
            return
        if not np.isfinite(features).all():
            raise DataError("some features are NaN or infinite; their statistics would be meaningless")
        n_b = len(features)
        mean_b = features.mean(axis=0)
        centred = features - mean_b
        m2_b = centred.T @ centred
        if self.mean is None:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        if mean_b.shape != self.mean.shape:
            raise DataError(f"features of dimension {mean_b.shape[0]} added to statistics of {self.mean.shape[0]}")
        n_a, total = self.count, self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / total)
        self.count = total

    def result(self, extractor: Extractor, source: str) -> FeatureStatistics:
        if self.count < 2 or self.mean is None or self.m2 is None:
            raise DataError(f"{source}: a covariance needs at least 2 images, got {self.count}")
        return FeatureStatistics(self.mean.copy(), self.m2 / (self.count - 1), self.count, extractor.name, source)
