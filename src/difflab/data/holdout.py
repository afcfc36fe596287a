"""Held-out images: a fixed share of the training set that training never sees.

`--holdout N` sets N images aside before the first step. The quality monitor compares the
samples' nearest-neighbour distances to the training images with the held-out images'
distances to them: a model that copies its training set comes closer to it than unseen real
images do, which no FID can show. The split depends only on (number of images, N, seed), so a
resumed run holds out the same images; the held-out names are written to the run folder.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from difflab.data.base import BaseImageDataset
from difflab.errors import ConfigError

HOLDOUT_STREAM = 0x401D  # a seed stream of its own: the split does not move when other randomness does


class DatasetView(BaseImageDataset):
    """The images of `base` at `indices` (sorted), with the same interface as any dataset."""

    def __init__(self, base: BaseImageDataset, indices: Sequence[int], name: str) -> None:
        self.base = base
        self.indices = torch.as_tensor(list(indices), dtype=torch.long)
        self.name = name
        self.channels, self.image_size = base.channels, base.image_size
        self.refs = [base.refs[i] for i in self.indices.tolist()] if base.refs else []
        self.bad_files = list(base.bad_files)
        self.images = base.images[self.indices] if base.images is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.images is not None:
            return self.images[index]
        return self.base[int(self.indices[index])]


def holdout_indices(num_images: int, count: int, seed: int) -> list[int]:
    """The sorted indices of the `count` held-out images among `num_images`."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + HOLDOUT_STREAM)
    return sorted(torch.randperm(num_images, generator=generator)[:count].tolist())


def split_holdout(dataset: BaseImageDataset, count: int, seed: int,
                  min_train: int = 1) -> tuple[BaseImageDataset, DatasetView | None]:
    """(the images to train on, the held-out images); (dataset, None) when `count` is 0."""
    if count <= 0:
        return dataset, None
    if len(dataset) - count < min_train:
        raise ConfigError(f"{{option}} {count} leaves {len(dataset) - count} of {dataset.name}'s {len(dataset)} "
                          f"images to train on; at least {min_train} are needed (one batch)", option="holdout")
    held = holdout_indices(len(dataset), count, seed)
    held_set = set(held)
    kept = [i for i in range(len(dataset)) if i not in held_set]
    return (DatasetView(dataset, kept, f"{dataset.name} (training part)"),
            DatasetView(dataset, held, f"{dataset.name} (held out)"))
