"""Validation of the data options given to the dataset functions. The options' choices and ranges
are declared once, with the run options (difflab.config); errors name the option by its library
name (`image_size`), which the command line shows as its flag."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from difflab.config import POSITIVE, check_declared_range, declaration
from difflab.errors import OPTION, ConfigError

Item = TypeVar("Item")

_CACHE_WORDS = {"auto": None, "on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}


def parse_channels(value: int | str) -> int | None:
    """1 or 3, or None for "auto" (decide from the images)."""
    text = str(value).strip().lower()
    choices = declaration("image_channels")["choices"]
    if text not in choices:
        raise ConfigError(f"{OPTION} must be one of {', '.join(choices)}; got {value!r}", option="image_channels")
    return None if text == "auto" else int(text)


def parse_cache(value: bool | str) -> bool | None:
    """True/False, or None for "auto" (cache when the decoded set fits in memory)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _CACHE_WORDS:
        return _CACHE_WORDS[text]
    raise ConfigError(f"{OPTION} must be one of auto, on, off; got {value!r}", option="cache")


def _check_whole(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{OPTION} must be a whole number; got {value!r}", option=name)


def check_image_size(value: int) -> int:
    """A positive whole number (the image_size option's declared range)."""
    _check_whole("image_size", value)
    check_declared_range("image_size", value, declaration("image_size"))
    return value


def check_max_images(value: int | None) -> int | None:
    """None (all images) or a positive whole number. (The max_images option's 0 = all is None here.)"""
    if value is not None:
        _check_whole("max_images", value)
        check_declared_range("max_images", value, {**declaration("max_images"), **POSITIVE})
    return value


def spread_subset(items: Sequence[Item], limit: int | None) -> list[Item]:
    """At most `limit` items, evenly spread over the sorted list.

    Folders are usually sorted by class (CIFAR's train/airplane/...), so the
    first N files would all be one class; an even spread keeps the mix.
    """
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]
