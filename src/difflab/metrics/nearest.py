"""Memorisation check: the training image closest to each generated image.

Low FID can come from a model that replays its training set. Two distances catch
different kinds of copying: in pixels (a near-verbatim copy) and in feature space
(the same picture slightly shifted or recoloured). Pixels are compared as 32x32
thumbnails, so image sizes need not match and 20,000 training images take 60 MB.

The pixel distance is the RMS difference in [0, 1] units. On the 64 px anime faces,
a JPEG re-encoding (quality 75) of a training image is at most 0.021 from it, while
distinct faces are 0.19 apart (median; 1st percentile 0.09), so the default near-copy
threshold of 0.05 sits well between the two.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from difflab.data.files import ImageRef, read_image

THUMBNAIL_SIZE = 32
DEFAULT_COPY_THRESHOLD = 0.05
_QUERY_CHUNK = 1024  # generated images per distance matrix block, to bound memory


class ThumbnailCollector:
    """A scan consumer keeping each image as a 32x32 RGB uint8 thumbnail (3 KB an image)."""

    def __init__(self) -> None:
        self._thumbnails: list[np.ndarray] = []

    def add(self, refs: Sequence[ImageRef], images: Sequence[Image.Image]) -> None:
        for image in images:
            small = image.convert("RGB").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR)
            self._thumbnails.append(np.asarray(small, dtype=np.uint8).reshape(-1))

    def result(self) -> np.ndarray:
        """(N, 32*32*3) uint8."""
        return np.stack(self._thumbnails)


def nearest_neighbours(queries: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and Euclidean distance to each query's nearest candidate (rows are points).

    The search uses fast float32 matrix products, a block of queries at a time; the
    winner's distance is then recomputed directly in float64, so that an exact copy
    reports exactly 0 rather than rounding noise.
    """
    candidates_t = torch.from_numpy(candidates.astype(np.float32))
    indices, distances = [], []
    for start in range(0, len(queries), _QUERY_CHUNK):
        chunk = queries[start : start + _QUERY_CHUNK]
        best = torch.cdist(torch.from_numpy(chunk.astype(np.float32)), candidates_t).argmin(dim=1).numpy()
        difference = chunk.astype(np.float64) - candidates[best].astype(np.float64)
        indices.append(best)
        distances.append(np.linalg.norm(difference, axis=1))
    return np.concatenate(indices), np.concatenate(distances)


@dataclass(frozen=True)
class Match:
    """One generated image and its nearest training images."""

    generated: ImageRef
    pixel_neighbour: ImageRef
    pixel_distance: float  # RMS over thumbnail pixels, in [0, 1]
    feature_neighbour: ImageRef
    feature_distance: float  # Euclidean, in the extractor's feature space


def find_matches(
    generated: Sequence[ImageRef],
    generated_features: np.ndarray,
    generated_thumbnails: np.ndarray,
    training: Sequence[ImageRef],
    training_features: np.ndarray,
    training_thumbnails: np.ndarray,
) -> list[Match]:
    pixel_index, pixel_distance = nearest_neighbours(generated_thumbnails, training_thumbnails)
    pixel_rms = pixel_distance / 255 / np.sqrt(generated_thumbnails.shape[1])
    feature_index, feature_distance = nearest_neighbours(generated_features, training_features)
    return [
        Match(
            generated=ref,
            pixel_neighbour=training[pixel_index[i]],
            pixel_distance=float(pixel_rms[i]),
            feature_neighbour=training[feature_index[i]],
            feature_distance=float(feature_distance[i]),
        )
        for i, ref in enumerate(generated)
    ]


def near_copies(matches: Sequence[Match], threshold: float = DEFAULT_COPY_THRESHOLD) -> list[Match]:
    """Generated images within `threshold` RMS pixel distance of a training image, closest first."""
    return sorted((m for m in matches if m.pixel_distance < threshold), key=lambda m: m.pixel_distance)


def closest_pairs_image(matches: Sequence[Match], num_pairs: int = 8, cell: int = 96) -> Image.Image:
    """A grid, closest pair first: generated | nearest in pixels | nearest in features, with distances."""
    rows = sorted(matches, key=lambda m: m.pixel_distance)[:num_pairs]
    caption = 14
    sheet = Image.new("RGB", (3 * cell, len(rows) * (cell + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, match in enumerate(rows):
        top = row * (cell + caption)
        tiles = (
            (match.generated, "generated"),
            (match.pixel_neighbour, f"pixels {match.pixel_distance:.3f}"),
            (match.feature_neighbour, f"features {match.feature_distance:.3g}"),
        )
        for column, (ref, label) in enumerate(tiles):
            tile = read_image(ref).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(tile, (column * cell, top + caption))
            draw.text((column * cell + 2, top + 1), label, fill="black")
    return sheet
