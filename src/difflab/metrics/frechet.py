"""The Frechet distance between two Gaussians, with pytorch-fid's numerics.

    d^2 = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2))

(Heusel et al. 2017; Dowson & Landau 1982.) Every step follows pytorch-fid's
`calculate_frechet_distance` (the "stable version by Dougal J. Sutherland"), so that
the same statistics give the same FID to the last digits: `scipy.linalg.sqrtm` of the
product, a 1e-6 offset on both diagonals when the product is singular, and the real
part kept when the imaginary part of the diagonal is numerical noise (atol 1e-3).

pytorch-fid passes `disp=False` to sqrtm only to get the error estimate instead of a
printed warning; SciPy 1.16 deprecated that argument (the root itself is the same), so
here the warning is silenced instead.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from difflab.errors import DataError

SINGULAR_OFFSET = 1e-6
IMAGINARY_TOLERANCE = 1e-3


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = SINGULAR_OFFSET
) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise DataError(
            f"the two sets of statistics have different feature dimensions "
            f"(mean {mu1.shape} vs {mu2.shape}, covariance {sigma1.shape} vs {sigma2.shape})"
        )
    diff = mu1 - mu2

    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"the product of the covariances is singular; adding {eps} to their diagonals",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))

    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            largest = np.max(np.abs(covmean.imag))
            raise DataError(
                f"the matrix square root has an imaginary component of {largest:.3g}: the covariances "
                "are too ill-conditioned for a Frechet distance (too few images?)"
            )
        covmean = covmean.real

    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's principal square root, without its "matrix is singular" chatter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)
