"""Random augmentation of whole batches on the training device.

Working on (B, C, H, W) tensors where the batch already lives keeps the GPU
fed without CPU workers. The three operations mirror the usual "medium"
torchvision baseline: RandomHorizontalFlip, a small RandomRotation and
ColorJitter(brightness, contrast).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from difflab.errors import OPTION, ConfigError

# Luma weights torchvision uses for the gray mean in its contrast adjustment.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    hflip: bool = False,
    rotate_degrees: float = 0.0,
    jitter: float = 0.0,
) -> torch.Tensor:
    """Augment float images in [-1, 1], each sample independently.

    - hflip: mirror left-right with probability 0.5;
    - rotate_degrees: rotate by an angle uniform in [-d, d] (reflection padding);
    - jitter: brightness and contrast factors uniform in [1 - j, 1 + j].

    All randomness comes from `generator`, which must live on `images.device`,
    so a seeded generator reproduces the same batch. With everything off the
    input is returned as is.
    """
    if rotate_degrees < 0:
        raise ConfigError(f"{OPTION} must be >= 0; got {rotate_degrees}", option="rotate_degrees")
    if not 0 <= jitter < 1:
        raise ConfigError(f"{OPTION} must be in [0, 1); got {jitter}", option="jitter")
    if hflip:
        images = random_hflip(images, generator)
    if rotate_degrees > 0:
        images = rotate(images, _uniform(images, generator, rotate_degrees))
    if jitter > 0:
        images = adjust_brightness_contrast(
            images, 1 + _uniform(images, generator, jitter), 1 + _uniform(images, generator, jitter)
        )
    return images


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image with probability 0.5."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each square image about its centre by `degrees[i]`, counter-clockwise
    like torchvision (bilinear, reflection padding).

    Reflection rather than zeros avoids dark corners that the model would learn to draw.
    """
    radians = degrees.to(images.dtype) * (math.pi / 180)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def adjust_brightness_contrast(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """torchvision's brightness then contrast adjustment, per image, on [-1, 1] data.

    Brightness scales the [0, 1] pixel values; contrast blends each image with
    its own mean gray level. Both clamp to the valid range, as torchvision does.
    """
    unit = (images + 1) / 2
    unit = (unit * brightness.view(-1, 1, 1, 1)).clamp(0, 1)
    mean = _gray(unit).mean(dim=(1, 2, 3), keepdim=True)
    factor = contrast.view(-1, 1, 1, 1)
    unit = (factor * unit + (1 - factor) * mean).clamp(0, 1)
    return unit * 2 - 1


def _gray(unit: torch.Tensor) -> torch.Tensor:
    if unit.shape[1] != 3:
        return unit
    weights = torch.tensor(_GRAY_WEIGHTS, dtype=unit.dtype, device=unit.device).view(1, 3, 1, 1)
    return (unit * weights).sum(dim=1, keepdim=True)


def _uniform(images: torch.Tensor, generator: torch.Generator, half_width: float) -> torch.Tensor:
    """One value per sample, uniform in [-half_width, half_width]."""
    return (torch.rand(len(images), generator=generator, device=images.device) * 2 - 1) * half_width
