"""Batched feature extraction, fed by the streaming image scan.

Images become tensors exactly as torchvision's ToTensor makes them for pytorch-fid
(uint8 / 255 in float32), and the network always runs in full float32: no autocast,
and no TF32 on Ampere+ GPUs, whose 10-bit mantissas would make the features depend on
the GPU (benchmarks/inception_equivalence.py measures by how much).
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from difflab.data.files import ImageRef
from difflab.errors import DataError
from difflab.metrics.extractors import Extractor
from difflab.metrics.scan import DEFAULT_BATCH_SIZE, ScanResult, scan_images


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def images_to_tensor(images: Sequence[Image.Image]) -> Tensor:
    """Same-size RGB images -> float32 (N, 3, H, W) in [0, 1], bit for bit as ToTensor."""
    pixels = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)


@contextmanager
def full_float32() -> Iterator[None]:
    """Disable TF32 in convolutions and matmuls for the duration, then restore the settings."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class FeatureCollector:
    """A scan consumer that keeps only the features (N x D float32), never the images."""

    def __init__(self, extractor: Extractor, device: torch.device | str) -> None:
        self.extractor = extractor
        self.device = torch.device(device)
        self._chunks: list[np.ndarray] = []

    def add(self, refs: Sequence[ImageRef], images: Sequence[Image.Image]) -> None:
        self._chunks.append(self.features_of(images))

    def features_of(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Features in input order; images of different sizes are run as separate batches."""
        indices_by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            indices_by_size[image.size].append(index)
        features: list[np.ndarray | None] = [None] * len(images)
        with torch.no_grad(), full_float32():
            for indices in indices_by_size.values():
                batch = images_to_tensor([images[i] for i in indices]).to(self.device)
                batch_features = self._run(batch)
                for index, row in zip(indices, batch_features):
                    features[index] = row
        return np.stack(features)

    def _run(self, batch: Tensor) -> np.ndarray:
        """The extractor's features of one batch, checked: a user's network that raises, returns
        something other than (N, D) values, or returns NaN/infinity is a DataError, not a traceback
        or a silent `FD nan`."""
        name = self.extractor.name
        try:
            output = self.extractor.network.features(batch)
            values = (output.float().cpu().numpy() if torch.is_tensor(output)
                      else np.asarray(output, dtype=np.float32))
        except Exception as error:  # the user's network: whatever it raises becomes a message
            raise DataError(f"the {name} features failed on a batch of {len(batch)} images: "
                            f"{type(error).__name__}: {error}") from None
        if values.ndim != 2 or values.shape[0] != len(batch):
            raise DataError(f"the {name} features of {len(batch)} images have shape {tuple(values.shape)}; "
                            f"expected ({len(batch)}, D)")
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).any(axis=1).sum())
            raise DataError(f"the {name} features are NaN or infinite for {bad} of {len(batch)} images; "
                            "a Frechet distance or KID of them would be meaningless (check the feature network)")
        return values

    def result(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(self._chunks)


def extract_features(
    source: str,
    refs: Sequence[ImageRef],
    extractor: Extractor,
    device: torch.device | str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> tuple[np.ndarray, ScanResult]:
    """Features of every readable image in `refs`, and what the scan skipped."""
    collector = FeatureCollector(extractor, device)
    scan = scan_images(source, refs, [collector], batch_size=batch_size, progress=progress)
    return collector.result(), scan
