"""`ImageDataset`: a user's folder or zip of images as square uint8 tensors.

Small and medium sets (anything under `CACHE_LIMIT_BYTES` once decoded) are
decoded once into a single tensor: the trainer then moves it to the GPU and
indexes batches there, so no data loading happens during training at all.
Measured on 2 shared CPU cores: the 20k-image anime-faces zip (64 px) decodes
in 3-6 s depending on load. Threads do not speed up that set (with no resize,
per-file Python work in PIL holds the GIL), but they roughly halve the time
when decoding and resizing dominate, e.g. 1600x1200 JPEGs to 64 px.

Larger sets are read lazily per item by DataLoader workers. For those the
start-up scan only opens each file and checks its header (`Image.verify`,
which checks PNG checksums but not JPEG scan data), so starting on a million
images costs a quick read of each file rather than a full decode.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from difflab.data.base import BaseImageDataset
from difflab.data.files import ImageRef, attempt_decode, list_images, read_bytes, read_image
from difflab.data.modes import to_mode
from difflab.data.options import check_image_size, check_max_images, parse_cache, parse_channels, spread_subset
from difflab.data.parallel import thread_map
from difflab.data.transforms import detect_channels, to_square
from difflab.errors import DataError

CACHE_LIMIT_BYTES = 4 * 2**30
BAD_FILES_SHOWN = 10
# How many successive items a lazy dataset tries when a file that passed the
# header scan still fails to decode, before giving up.
_LAZY_RETRIES = 10
Row = TypeVar("Row")

logger = logging.getLogger(__name__)


class ImageDataset(BaseImageDataset):
    """Square uint8 (C, H, W) images from a folder (recursive), a .zip, or one image file."""

    def __init__(
        self,
        source: str | Path,
        image_size: int,
        channels: int | str = "auto",
        cache: bool | str = "auto",
        max_images: int | None = None,
        progress: bool = True,
        workers: int | None = None,
    ) -> None:
        self.name = str(source)
        self.image_size = check_image_size(image_size)
        wanted_channels = parse_channels(channels)
        wanted_cache = parse_cache(cache)
        refs = spread_subset(list_images(source), check_max_images(max_images))
        self.channels = wanted_channels or detect_channels(refs)
        self.workers = workers
        if wanted_cache is None:
            wanted_cache = self.decoded_bytes(len(refs)) <= CACHE_LIMIT_BYTES
        scan = self._decode_all if wanted_cache else self._check_headers
        self.refs, self.bad_files = scan(refs, progress)
        if not self.refs:
            raise DataError(f"none of the {len(refs)} files in {self.name} could be read as an image")
        if self.bad_files:
            report_bad_files(self.bad_files, total=len(refs), source=self.name)

    def decoded_bytes(self, count: int) -> int:
        """Memory that `count` decoded images take as uint8."""
        return count * self.channels * self.image_size**2

    def load(self, ref: ImageRef) -> torch.Tensor:
        """Decode one file into a uint8 (C, H, W) tensor of the dataset's shape."""
        img = to_square(to_mode(read_image(ref, min_size=self.image_size), self.channels), self.image_size)
        pixels = np.asarray(img, dtype=np.uint8)
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.images is not None:
            return self.images[index]
        return self._load_lazily(index)

    def _decode_all(self, refs: Sequence[ImageRef], progress: bool) -> tuple[list[ImageRef], list[tuple[str, str]]]:
        """Decode every file into `self.images`; this pass is also the bad-file check."""
        images = torch.empty((len(refs), self.channels, self.image_size, self.image_size), dtype=torch.uint8)
        good: list[int] = []
        bad: list[tuple[str, str]] = []
        results = thread_map(lambda ref: attempt_decode(self.load, ref), refs, self.workers)
        for index, (ref, (tensor, reason)) in enumerate(_progress(zip(refs, results), len(refs), progress, "decoding")):
            if tensor is None:
                bad.append((str(ref), reason))
            else:
                images[len(good)] = tensor  # packed as we go: no second copy to drop bad rows
                good.append(index)
        self.images = images[: len(good)].clone() if bad else images
        return [refs[i] for i in good], bad

    def _check_headers(self, refs: Sequence[ImageRef], progress: bool) -> tuple[list[ImageRef], list[tuple[str, str]]]:
        """Cheap scan for lazy mode: drop files that are not images at all."""
        results = thread_map(lambda ref: attempt_decode(_verify_header, ref), refs, self.workers)
        good, bad = [], []
        for ref, (_, reason) in _progress(zip(refs, results), len(refs), progress, "checking"):
            if reason is None:
                good.append(ref)
            else:
                bad.append((str(ref), reason))
        return good, bad

    def _load_lazily(self, index: int) -> torch.Tensor:
        """Decode item `index`; a file that broke since the scan is replaced by the next
        one, with a warning, because one bad file should not end a day-long run."""
        self.refs[index]  # IndexError past the end, as sequence iteration expects
        for attempt in range(_LAZY_RETRIES):
            ref = self.refs[(index + attempt) % len(self.refs)]
            tensor, reason = attempt_decode(self.load, ref)
            if tensor is not None:
                return tensor
            logger.warning("skipping unreadable image %s (%s)", ref, reason)
        raise DataError(f"{_LAZY_RETRIES} images in a row from {self.name} failed to decode; check the files")


def report_bad_files(bad_files: Sequence[tuple[str, str]], total: int, source: str) -> None:
    """Tell the user once which files were skipped and why."""
    shown = "\n".join(f"  {label}: {reason}" for label, reason in bad_files[:BAD_FILES_SHOWN])
    more = f"\n  ... and {len(bad_files) - BAD_FILES_SHOWN} more" if len(bad_files) > BAD_FILES_SHOWN else ""
    message = f"skipped {len(bad_files)} of {total} files in {source} that could not be read as images:\n{shown}{more}"
    # Logging rather than warnings.warn: with no logging set up it prints once,
    # as plain text, on stderr (Python's last-resort handler).
    logger.warning(message)


def _verify_header(ref: ImageRef) -> None:
    Image.open(io.BytesIO(read_bytes(ref))).verify()


def _progress(items: Iterable[Row], total: int, enabled: bool, verb: str) -> Iterable[Row]:
    return tqdm(items, total=total, disable=not enabled, desc=f"{verb} images", unit="img", leave=False)
