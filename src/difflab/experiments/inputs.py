"""User images as model inputs: decoded, squared and converted exactly as training data is."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.data import ImageRef, list_images, read_image, to_mode, to_square
from difflab.data.files import DECODE_ERRORS
from difflab.errors import DataError
from difflab.generation import LoadedModel


def single_image(path: str | Path) -> ImageRef:
    """The one image at `path` (a file, not a folder)."""
    refs = list_images(path)
    if len(refs) != 1 or Path(path).is_dir():
        raise DataError(f"{path} is a folder or archive; give one image file (a folder's images are fused in "
                        "random pairs in batch mode)")
    return refs[0]


def image_batch(refs: list[ImageRef], loaded: LoadedModel) -> Tensor:
    """Images at the model's size and channel count, in [-1, 1], (B, C, S, S) on its device."""
    channels, size, _ = loaded.image_shape()
    pixels = []
    for ref in refs:
        try:
            image = to_mode(to_square(read_image(ref), size), channels)
        except DECODE_ERRORS as error:
            raise DataError(f"cannot read {ref}: {type(error).__name__}: {error}") from error
        array = np.asarray(image, dtype=np.uint8).reshape(size, size, channels)
        pixels.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
    return torch.stack(pixels).to(loaded.device, torch.float32).div(127.5).sub(1.0)


def random_pairs(refs: list[ImageRef], count: int, seed: int = 0) -> list[tuple[ImageRef, ImageRef]]:
    """`count` pairs of two different images each, drawn reproducibly from `refs`."""
    if len(refs) < 2:
        raise DataError(f"random pairs need at least 2 images; found {len(refs)}")
    rng = random.Random(seed)
    return [tuple(refs[i] for i in rng.sample(range(len(refs)), 2)) for _ in range(count)]
