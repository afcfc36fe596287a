"""Labelled image tables (columns labelled with t or lambda) and animated GIFs, drawn with PIL.

Small model images (16-64 px) are enlarged with nearest-neighbour so each pixel stays
visible and nothing is invented by interpolation.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

PADDING = 2  # pixels between cells, as in viz.grid.make_grid
LABEL_HEIGHT = 18  # the band above each column holding its label
FONT_SIZE = 12
MIN_CELL_PIXELS = 64  # the auto scale enlarges images to at least this size


def auto_scale(image_size: int) -> int:
    """The integer nearest-neighbour factor that makes an image at least MIN_CELL_PIXELS wide."""
    return max(1, math.ceil(MIN_CELL_PIXELS / image_size))


def label_font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    """PIL's built-in font (scalable from Pillow 10.1; the fixed bitmap font before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def row_label_width(row_labels: Sequence[str] | None) -> int:
    """Width of the band left of the cells that holds the row labels (0 without labels)."""
    if not row_labels:
        return 0
    font = label_font()
    return max(int(font.getlength(label)) for label in row_labels) + 2 * PADDING + 4


def labelled_grid(cells: torch.Tensor, column_labels: Sequence[str], row_labels: Sequence[str] | None = None,
                  scale: int = 1) -> Image.Image:
    """uint8 cells (rows, columns, C, H, W) as one RGB image, each column labelled above.

    Size: left band + columns * (W * scale + PADDING) + PADDING wide,
    LABEL_HEIGHT + rows * (H * scale + PADDING) + PADDING high."""
    rows, columns, channels, height, width = cells.shape
    if len(column_labels) != columns:
        raise ValueError(f"{columns} columns but {len(column_labels)} labels")
    cell_h, cell_w = height * scale, width * scale
    left = row_label_width(row_labels)
    canvas = Image.new("RGB", (left + columns * (cell_w + PADDING) + PADDING,
                               LABEL_HEIGHT + rows * (cell_h + PADDING) + PADDING), "white")
    draw, font = ImageDraw.Draw(canvas), label_font()
    for column, label in enumerate(column_labels):
        centre = left + PADDING + column * (cell_w + PADDING) + cell_w / 2
        draw.text((centre, LABEL_HEIGHT / 2), label, fill="black", font=font, anchor="mm")
    for row in range(rows):
        top = LABEL_HEIGHT + PADDING + row * (cell_h + PADDING)
        if row_labels:
            draw.text((PADDING, top + cell_h / 2), row_labels[row], fill="black", font=font, anchor="lm")
        for column in range(columns):
            image = cell_image(cells[row, column]).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(image, (left + PADDING + column * (cell_w + PADDING), top))
    return canvas


def cell_image(image: torch.Tensor) -> Image.Image:
    """One uint8 (C, H, W) image as RGB, so grayscale and colour cells share a canvas."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


def save_gif(frames: Sequence[Image.Image], path: str | Path, frame_ms: int = 400, last_frame_ms: int = 1500) -> Path:
    """An endlessly looping GIF; the last frame (the finished image) is held longer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [frame_ms] * (len(frames) - 1) + [last_frame_ms]
    frames[0].save(path, save_all=True, append_images=list(frames[1:]), duration=durations, loop=0)
    return path
