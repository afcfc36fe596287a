"""A cache of reference-set statistics, so the 20,000 training images are read only once.

The key covers everything the statistics depend on: each file's name, size and
modification time (for a zip, the archive's) and the extractor's identity (for
Inception, its weights' checksum; for a user network, its source file's).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

from difflab.data.files import ImageRef
from difflab.metrics.cache import cache_dir
from difflab.metrics.extractors import Extractor
from difflab.metrics.statistics import FeatureStatistics


def fingerprint(refs: Sequence[ImageRef], extractor: Extractor) -> str:
    digest = hashlib.sha256(extractor.identity.encode())
    stat_cache: dict[str, os.stat_result] = {}
    for ref in refs:
        file_path = ref.container or ref.name
        if file_path not in stat_cache:
            stat_cache[file_path] = os.stat(file_path)
        stat = stat_cache[file_path]
        digest.update(f"{ref.container}\0{ref.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_statistics(
    source: str, refs: Sequence[ImageRef], extractor: Extractor, compute: Callable[[], FeatureStatistics]
) -> tuple[FeatureStatistics, bool]:
    """The cached statistics of `refs`, or `compute()`'s, stored for next time; and whether it was a hit."""
    path = cache_path(refs, extractor)
    if path.is_file():
        return dataclasses.replace(FeatureStatistics.load(path), source=source), True
    statistics = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.npz")
    statistics.save(partial)
    os.replace(partial, path)  # a crash mid-write never leaves a truncated cache entry
    return statistics, False


def cache_path(refs: Sequence[ImageRef], extractor: Extractor) -> Path:
    return cache_dir("stats") / f"{fingerprint(refs, extractor)}.npz"
