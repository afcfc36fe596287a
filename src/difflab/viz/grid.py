"""Image grids and tensor <-> image conversion (torchvision.utils.make_grid without torchvision)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Model-space images in [-1, 1] (B, C, H, W) to uint8 [0, 255] on the CPU."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def to_pil(image: torch.Tensor) -> Image.Image:
    """One uint8 image (C, H, W), C in {1, 3}, to a PIL image."""
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, "L" if array.shape[2] == 1 else "RGB")


def make_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2, pad_value: int = 255) -> Image.Image:
    """Tile uint8 images (B, C, H, W) into one PIL image, `columns` per row (default: square-ish)."""
    batch, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(batch))
    rows = math.ceil(batch / columns)
    canvas = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
                     pad_value, dtype=np.uint8)
    for index in range(batch):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        canvas[top:top + height, left:left + width] = images[index].permute(1, 2, 0).numpy()
    return Image.fromarray(canvas[:, :, 0] if channels == 1 else canvas, "L" if channels == 1 else "RGB")


def save_grid(images: torch.Tensor, path: str | Path, columns: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, columns).save(path)
    return path
