"""Validation of the user-facing data options, with messages that name the flag."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from difflab.errors import ConfigError

Item = TypeVar("Item")

_CACHE_WORDS = {"auto": None, "on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


def parse_channels(value: int | str) -> int | None:
    """1 or 3, or None for "auto" (decide from the images)."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in ("1", "3"):
        return int(text)
    raise ConfigError(f"--image-channels must be one of auto, 1, 3; got {value!r}")


def parse_cache(value: bool | str) -> bool | None:
    """True/False, or None for "auto" (cache when the decoded set fits in memory)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _CACHE_WORDS:
        return _CACHE_WORDS[text]
    raise ConfigError(f"--cache must be one of auto, on, off; got {value!r}")


def check_image_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--image-size must be a positive integer; got {value!r}")
    return value


def check_max_images(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"--max-images must be a positive integer; got {value!r}")
    return value


def spread_subset(items: Sequence[Item], limit: int | None) -> list[Item]:
    """At most `limit` items, evenly spread over the sorted list.

    Folders are usually sorted by class (CIFAR's train/airplane/...), so the
    first N files would all be one class; an even spread keeps the mix.
    """
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]
