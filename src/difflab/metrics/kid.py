"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs").

KID is the unbiased estimate of the squared MMD between the feature distributions with
the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, the kernel of the paper and of
the Keras DDIM example. Unlike FID it has no bias from the sample size, so it is the
metric to use when there are fewer images than feature dimensions. As in the paper,
the estimate is averaged over random subsets, and their spread is reported too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from difflab.errors import DataError

DEFAULT_NUM_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


@dataclass(frozen=True)
class KernelDistance:
    """KID over `num_subsets` random subsets of `subset_size` images from each set."""

    mean: float
    std: float
    num_subsets: int
    subset_size: int


def polynomial_kernel(features_x: np.ndarray, features_y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for every pair of rows."""
    dims = features_x.shape[1]
    return (features_x @ features_y.T / dims + 1.0) ** 3


def mmd2_unbiased(features_x: np.ndarray, features_y: np.ndarray) -> float:
    """Unbiased MMD^2: within-set kernel means skip the diagonal (a sample compared with itself)."""
    m, n = len(features_x), len(features_y)
    kernel_xx = polynomial_kernel(features_x, features_x)
    kernel_yy = polynomial_kernel(features_y, features_y)
    kernel_xy = polynomial_kernel(features_x, features_y)
    mean_xx = (kernel_xx.sum() - np.trace(kernel_xx)) / (m * (m - 1))
    mean_yy = (kernel_yy.sum() - np.trace(kernel_yy)) / (n * (n - 1))
    return float(mean_xx + mean_yy - 2 * kernel_xy.mean())


def kernel_distance(
    features_x: np.ndarray,
    features_y: np.ndarray,
    num_subsets: int = DEFAULT_NUM_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = 0,
) -> KernelDistance:
    """KID between two feature sets; subsets shrink to the smaller set when it has fewer images."""
    if features_x.shape[1] != features_y.shape[1]:
        raise DataError(
            f"the two feature sets have different dimensions ({features_x.shape[1]} vs {features_y.shape[1]})"
        )
    subset_size = min(subset_size, len(features_x), len(features_y))
    if subset_size < 2:
        raise DataError(f"KID needs at least 2 images in each set, got {len(features_x)} and {len(features_y)}")
    rng = np.random.default_rng(seed)
    estimates = np.array([
        mmd2_unbiased(
            features_x[rng.choice(len(features_x), subset_size, replace=False)].astype(np.float64),
            features_y[rng.choice(len(features_y), subset_size, replace=False)].astype(np.float64),
        )
        for _ in range(num_subsets)
    ])
    return KernelDistance(float(estimates.mean()), float(estimates.std()), num_subsets, subset_size)
