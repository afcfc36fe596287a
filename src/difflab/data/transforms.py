"""Deterministic shape and colour transforms that turn any image into model input.

PIL-image transforms serve files; the `*_batch` tensor versions serve builtin
sets (MNIST, CIFAR pickles, shapes) that are already arrays.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from difflab.data.files import ImageRef, try_read_image
from difflab.data.modes import is_grayscale, to_mode
from difflab.errors import OPTION, ConfigError

__all__ = ["to_square", "to_mode", "is_grayscale", "detect_channels", "resize_batch", "convert_channels_batch"]

# PIL's own RGB -> L weights (ITU-R 601-2 luma) in 16-bit fixed point, so tensor
# conversion gives the same bytes as `img.convert("L")`.
_LUMA_WEIGHTS = (19595, 38470, 7471)


def to_square(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to `size` with Lanczos.

    Cropping first (via `box`) is the same as resizing the shorter side and then
    cropping, but resamples fewer pixels. PIL widens the Lanczos kernel when
    shrinking, so downscaling is antialiased.
    """
    width, height = img.size
    if (width, height) == (size, size):
        return img
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return img.resize((size, size), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))


def detect_channels(refs: Sequence[ImageRef], sample: int = 64) -> int:
    """3 if any of up to `sample` evenly spread images has colour, else 1.

    Stops at the first colour image, so colour folders cost one decode.
    """
    step = max(1, len(refs) // sample)
    for ref in refs[::step][:sample]:
        img, _ = try_read_image(ref)
        if img is not None and not is_grayscale(img):
            return 3
    return 1


def resize_batch(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) square images to `size` with antialiased bicubic.

    Works in chunks so 60k MNIST digits never need one huge float copy.
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].float()
        resized = F.interpolate(block, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        out[start : start + chunk] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_channels_batch(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) between 1 and 3 channels, matching PIL's "L"/"RGB"."""
    if channels not in (1, 3):
        raise ConfigError(f"{OPTION} must be one of auto, 1, 3; got {channels!r}", option="image_channels")
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(_LUMA_WEIGHTS, dtype=torch.int32).view(1, 3, 1, 1)
    luma = (images.to(torch.int32) * weights).sum(dim=1, keepdim=True)
    return ((luma + 0x8000) >> 16).to(torch.uint8)
