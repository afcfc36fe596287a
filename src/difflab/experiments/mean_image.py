"""The mean-image effect of repeated denoiser passes (issue 15).

A denoiser D trained for the MSE returns E[x0 | x]; fed pure noise, which says nothing about x0,
it returns about the dataset's mean image. So the first pass from noise lands near the mean, and
each further pass is D applied to an image that is already nearly clean: the passes converge to a
fixed point, near the mean, and the samples lose their differences. Measured here as
- `to_mean`: the RMS distance (per pixel, images in [-1, 1]) of K-pass outputs to the mean image;
- `spread`: the RMS distance of the outputs to their own average (their diversity; real images
  have `data_spread`);
- `step`: the RMS change made by pass K (0: a fixed point).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from difflab.families.denoiser import check_passes, denoiser_pass, noise_generator


def mean_image(images: Iterable[Tensor]) -> Tensor:
    """The per-pixel mean of uint8 (C, H, W) images, as a float image in [-1, 1]."""
    total, count = None, 0
    for image in images:
        value = image.double().div(127.5).sub(1.0)
        total = value if total is None else total + value
        count += 1
    return (total / count).float()


def rms(a: Tensor, b: Tensor) -> Tensor:
    """Per-image RMS distance between image batches (or a batch and one image)."""
    return (a - b).pow(2).flatten(1).mean(dim=1).sqrt()


@torch.no_grad()
def pass_distances(network: torch.nn.Module, mean: Tensor, passes: Iterable[int], count: int = 256, seed: int = 0,
                   image_shape: tuple[int, int, int] | None = None) -> list[dict[str, float]]:
    """One row per K in `passes` (K = 0 is the noise): to_mean, spread and step (module docstring),
    from `count` noise images run through up to max(passes) passes once."""
    wanted = sorted(set(int(k) for k in passes))
    for k in wanted:
        check_passes(k)
    device = next(network.parameters()).device
    shape = image_shape or tuple(mean.shape)
    x = torch.randn(count, *shape, device=device, generator=noise_generator(seed, 0, device))
    mean = mean.to(device)
    rows, previous = [], x
    for k in range(max(wanted) + 1):
        if k > 0:
            previous, x = x, denoiser_pass(network, x)
        if k in wanted:
            rows.append({"passes": k, "to_mean": rms(x, mean).mean().item(),
                         "spread": rms(x, x.mean(dim=0)).mean().item(),
                         "step": rms(x, previous).mean().item() if k > 0 else float("nan")})
    return rows
