"""The interface every difflab dataset offers, and the in-memory implementation.

Trainers and metrics only rely on: `len`, `ds[i]` -> uint8 (C, H, W),
`.channels`, `.image_size`, `.refs`, `.bad_files`, `.images` (a uint8
(N, C, H, W) tensor when everything is in memory, else None) and
`require_at_least`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from difflab.data.files import ImageRef
from difflab.errors import OPTION, DataError


class BaseImageDataset(Dataset):
    """Shared attributes and checks; subclasses fill them in and implement `__getitem__`."""

    name: str
    channels: int
    image_size: int
    refs: Sequence[ImageRef]
    bad_files: list[tuple[str, str]]
    images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def require_at_least(self, count: int, option: str = "batch_size") -> None:
        """Raise DataError unless `count` usable images (e.g. one batch) are available; `option`
        names the option (its library name, e.g. "batch_size") that asks for them."""
        if len(self) >= count:
            return
        option = option.lstrip("-").replace("-", "_")  # a flag spelling ("--batch-size") names the same option
        skipped = f" ({len(self.bad_files)} unreadable files were skipped)" if self.bad_files else ""
        raise DataError(
            f"{self.name} has {len(self)} usable images{skipped}, but {OPTION} needs at least {count}; "
            f"add images or lower {OPTION}", option=option
        )

    def __repr__(self) -> str:
        where = "in memory" if self.images is not None else "read on demand"
        shape = f"{self.channels}x{self.image_size}x{self.image_size}"
        return f"{type(self).__name__}({self.name!r}, {len(self)} images, {shape}, {where})"


class TensorImageDataset(BaseImageDataset):
    """Images already decoded into one uint8 (N, C, H, W) tensor (MNIST, CIFAR, shapes)."""

    def __init__(self, images: torch.Tensor, name: str, refs: Sequence[ImageRef] | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"expected uint8 (N, C, S, S) images; got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise DataError(f"{name} contains no images")
        self.images = images
        self.name = name
        self.channels = images.shape[1]
        self.image_size = images.shape[-1]
        self.refs = refs if refs is not None else [ImageRef(name, str(i)) for i in range(len(images))]
        self.bad_files = []

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]
