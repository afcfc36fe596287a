"""One streaming pass over a set of images that feeds every metric at once.

`difflab eval` needs features, face detections and pixel thumbnails of the same
images; decoding each file once and handing the batch to every consumer keeps 50,000
images out of memory and off the disk a second time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from PIL import Image
from tqdm import tqdm

from difflab.data.files import ImageRef, iter_images
from difflab.errors import DataError

DEFAULT_BATCH_SIZE = 64


class BatchConsumer(Protocol):
    """Anything that takes decoded RGB images batch by batch (features, detector, thumbnails)."""

    def add(self, refs: Sequence[ImageRef], images: Sequence[Image.Image]) -> None: ...


@dataclass
class ScanResult:
    """Which images were used, and which could not be read (label, reason)."""

    source: str
    used: list[ImageRef] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def scan_images(
    source: str,
    refs: Sequence[ImageRef],
    consumers: Iterable[BatchConsumer],
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> ScanResult:
    """Decode `refs` in order (on a thread pool) and give each batch to every consumer.

    Unreadable files are skipped and recorded, not fatal: one broken PNG must not end
    a long evaluation. If nothing at all can be read, that is an error.
    """
    consumers = list(consumers)
    result = ScanResult(source)
    batch_refs: list[ImageRef] = []
    batch_images: list[Image.Image] = []

    def flush() -> None:
        for consumer in consumers:
            consumer.add(batch_refs, batch_images)
        result.used.extend(batch_refs)
        batch_refs.clear()
        batch_images.clear()

    images = iter_images(refs, mode="RGB", bad_files=result.unreadable)
    for ref, image in tqdm(images, total=len(refs), desc=f"reading {source}", unit="img", disable=not progress):
        if image is None:
            continue
        batch_refs.append(ref)
        batch_images.append(image)
        if len(batch_refs) == batch_size:
            flush()
    if batch_refs:
        flush()
    if not result.unreadable and not result.used:
        raise DataError(f"no images to measure in {source}")
    if not result.used:
        first_label, first_reason = result.unreadable[0]
        raise DataError(
            f"none of the {len(refs)} images in {source} could be read (e.g. {first_label}: {first_reason})"
        )
    return result
