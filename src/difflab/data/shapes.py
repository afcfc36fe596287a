"""A procedural dataset of coloured shapes, for demos and tests without any files.

Each image shows one to three filled discs, squares or triangles in a few
saturated colours on one plain light background: simple enough for a small
model to learn in minutes on a CPU, and easy to judge by eye in a sample grid.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

BACKGROUND = (242, 238, 228)
PALETTE = (
    (214, 39, 40),  # red
    (31, 119, 180),  # blue
    (44, 160, 44),  # green
    (255, 127, 14),  # orange
    (148, 103, 189),  # purple
    (40, 40, 40),  # near-black
)
SHAPES = ("disc", "square", "triangle")
SUPERSAMPLE = 4  # draw at 4x and box-filter down, for smooth antialiased edges
RADIUS_RANGE = (0.18, 0.32)  # shape half-size as a fraction of the image side
DEFAULT_NUM_IMAGES = 4096


def make_shapes(num_images: int = DEFAULT_NUM_IMAGES, image_size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 (N, 3, S, S) images; image i depends only on (seed, i), not on N."""
    images = np.stack([draw_shapes_image(image_size, np.random.default_rng([seed, i])) for i in range(num_images)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def draw_shapes_image(image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One (S, S, 3) uint8 image of 1-3 random shapes."""
    canvas_size = image_size * SUPERSAMPLE
    canvas = Image.new("RGB", (canvas_size, canvas_size), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(*RADIUS_RANGE) * canvas_size
        cx, cy = rng.uniform(radius, canvas_size - radius, size=2)
        colour = PALETTE[rng.integers(len(PALETTE))]
        _draw_shape(draw, SHAPES[rng.integers(len(SHAPES))], cx, cy, radius, colour)
    return np.asarray(canvas.reduce(SUPERSAMPLE))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour: tuple) -> None:
    if shape == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        half = r * 0.85  # a square of the same "radius" looks bigger than a disc
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=colour)
    else:  # upright equilateral triangle inscribed in the circle of radius r
        dx, dy = r * np.sqrt(3) / 2, r / 2
        draw.polygon([(cx, cy - r), (cx - dx, cy + dy), (cx + dx, cy + dy)], fill=colour)
