"""Normalising PIL colour modes to the two the models use: "L" and "RGB".

User folders hold palette GIF-like PNGs, transparent logos, 16-bit scans and
CMYK JPEGs; all of them must become plain 8-bit pixels before resizing.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from difflab.errors import OPTION, ConfigError

CHANNEL_MODES = {1: "L", 3: "RGB"}
# Transparent pixels are shown over white, as image viewers do; black would
# turn the background of every transparent logo into a dark blob.
ALPHA_BACKGROUND = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_GRAY_MODES = ("1", "L", "LA", "La", "F") + _SIXTEEN_BIT_MODES
# Largest per-pixel channel spread still called gray: a grayscale picture saved
# as an RGB JPEG decodes with channels that differ by a rounding step or two.
GRAY_TOLERANCE = 3


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any decoded image to 8-bit "L" (channels=1) or "RGB" (channels=3)."""
    if channels not in CHANNEL_MODES:
        raise ConfigError(f"{OPTION} must be one of auto, 1, 3; got {channels!r}", option="image_channels")
    target = CHANNEL_MODES[channels]
    if img.mode == target:
        return img
    img = _flatten_alpha(_to_8bit(img))
    if img.mode not in ("1", "L", "RGB"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV: go through RGB for a true luma
    return img if img.mode == target else img.convert(target)


def is_grayscale(img: Image.Image) -> bool:
    """True when the image carries no colour, even if it is stored as RGB."""
    if img.mode in _GRAY_MODES:
        return True
    rgb = np.asarray(to_mode(img, 3), dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return int(spread.max()) <= GRAY_TOLERANCE


def _to_8bit(img: Image.Image) -> Image.Image:
    """Scale 16-bit and float images to 0..255; PIL's own conversion clips them instead."""
    if img.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(img, dtype=np.float64) / 257.0
    elif img.mode == "F":
        pixels = np.asarray(img, dtype=np.float64)
    else:
        return img
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images over white and drop the alpha channel."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode not in ("RGBA", "RGBa", "LA", "La", "PA"):
        return img
    background = Image.new("RGBA", img.size, ALPHA_BACKGROUND)
    return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
