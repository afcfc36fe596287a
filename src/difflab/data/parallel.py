"""A bounded, order-preserving thread map for decoding many images.

PIL releases the GIL while it decodes and resizes, so threads give real
speed-ups without the pickling and start-up cost of processes.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def default_workers() -> int:
    """Threads for decoding: one per core, capped because a zip is read through one handle."""
    return max(1, min(8, os.cpu_count() or 1))


def thread_map(
    fn: Callable[[Item], Result], items: Iterable[Item], workers: int | None = None
) -> Iterator[Result]:
    """Like `executor.map`, but keeps only a few tasks in flight, so streaming a
    million files never holds a million futures (or decoded images) at once."""
    workers = default_workers() if workers is None else workers
    if workers <= 1:
        yield from map(fn, items)
        return
    max_in_flight = workers * 4
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="difflab-decode") as pool:
        pending: deque[Future[Result]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
