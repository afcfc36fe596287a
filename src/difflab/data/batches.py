"""Deterministic, resumable batch order.

Batch `step` is a pure function of (seed, step), independent of worker count
and of where a run was stopped, so N steps + resume + M steps sees exactly the
same batches as N + M steps in one go.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from difflab.errors import OPTION, ConfigError


def batch_indices(
    step: int, batch_size: int, num_items: int, seed: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Item indices (int64, CPU) of batch `step` for process `rank`.

    The global batch is positions [step*B, (step+1)*B) of an endless stream made
    of one fresh permutation per epoch, so a batch may straddle two epochs (or
    span several when B > num_items). Rank r gets `global[r::world_size]`.
    """
    if batch_size < 1:
        raise ConfigError(f"{OPTION} must be a positive integer; got {batch_size}", option="batch_size")
    if batch_size % world_size:
        raise ConfigError(f"{OPTION} ({batch_size}) must be divisible by the number of processes ({world_size})",
                          option="batch_size")
    if num_items < 1:
        raise ValueError("batch_indices needs at least one item")
    start = step * batch_size
    first_epoch, last_epoch = start // num_items, (start + batch_size - 1) // num_items
    parts = []
    for epoch in range(first_epoch, last_epoch + 1):
        lo = max(start, epoch * num_items) - epoch * num_items
        hi = min(start + batch_size, (epoch + 1) * num_items) - epoch * num_items
        parts.append(epoch_permutation(seed, epoch, num_items)[lo:hi])
    return torch.cat(parts)[rank::world_size]


@lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_items: int) -> torch.Tensor:
    """The item order of one epoch. Cached: consecutive steps share it. Do not modify."""
    # SeedSequence mixes (seed, epoch) into well-separated streams; seed+epoch would not.
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
    generator = torch.Generator(device="cpu").manual_seed(mixed)
    return torch.randperm(num_items, generator=generator)


class StepBatchSampler(Sampler[list[int]]):
    """Endless batch sampler for DataLoader that follows `batch_indices`."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, rank: int, world_size: int):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for step in itertools.count(self.start_step):
            yield batch_indices(step, self.batch_size, self.num_items, self.seed, self.rank, self.world_size).tolist()


class BatchStream:
    """Endless uint8 (B, C, H, W) batches on `device` for steps start_step, start_step+1, ...

    `batch_size` is per process, as with a DataLoader under DDP: the global batch
    of each step is batch_size * world_size, and rank r gets its share of it.
    A dataset with an in-memory `images` tensor is moved to `device` once and
    indexed there (no workers, no copies per step). Otherwise a DataLoader with
    worker processes decodes files ahead of the training loop.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        start_step: int,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
        workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"{OPTION} must be a positive integer; got {batch_size}", option="batch_size")
        self.dataset, self.seed, self.start_step = dataset, seed, start_step
        self.global_batch_size = batch_size * world_size
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers
        images = getattr(dataset, "images", None)
        self.images = images.to(self.device) if images is not None else None

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self._from_memory() if self.images is not None else self._from_loader()

    def _from_memory(self) -> Iterator[torch.Tensor]:
        for step in itertools.count(self.start_step):
            indices = batch_indices(
                step, self.global_batch_size, len(self.images), self.seed, self.rank, self.world_size
            )
            yield self.images[indices.to(self.device, non_blocking=True)]

    def _from_loader(self) -> Iterator[torch.Tensor]:
        sampler = StepBatchSampler(
            len(self.dataset), self.global_batch_size, self.seed, self.start_step, self.rank, self.world_size
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.workers > 0,
            prefetch_factor=4 if self.workers > 0 else None,
        )
        for batch in loader:
            yield batch.to(self.device, non_blocking=True)
