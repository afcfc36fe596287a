"""What fusion writes: labelled strips, and numbered fused images for random pairs of a folder."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from difflab.data import ImageRef
from difflab.experiments.fusion import FusionSettings, fuse
from difflab.experiments.inputs import image_batch
from difflab.generation import LoadedModel, write_numbered_images
from difflab.generation.generate import batch_generator
from difflab.viz.figures import labelled_grid
from difflab.viz.grid import to_uint8

PAIRS_PREVIEW = "pairs.png"
MANIFEST = "difflab-sample.json"  # the evaluation commands skip the previews it lists
PREVIEW_PAIRS = 8


def fusion_strip(images_a: Tensor, images_b: Tensor, fused: Tensor, lams: list[float], scale: int = 1) -> Image.Image:
    """Rows of [a, fused at each lambda..., b]; images in [-1, 1], fused shaped (rows, lambdas, C, H, W)."""
    cells = torch.cat([to_uint8(images_a).unsqueeze(1), to_uint8(fused), to_uint8(images_b).unsqueeze(1)], dim=1)
    return labelled_grid(cells, ["a"] + [f"lam={lam:g}" for lam in lams] + ["b"], scale=scale)


def fuse_strip(loaded: LoadedModel, image_a: Tensor, image_b: Tensor, lams: list[float], settings: FusionSettings,
               seed: int = 0, scale: int = 1) -> tuple[Tensor, Image.Image]:
    """One pair (each (1, C, H, W)) fused at every lambda, with the same starting noise for all."""
    generator = batch_generator(seed, 0, loaded.device)
    fused = fuse(loaded, image_a, image_b, torch.tensor(lams), settings, generator)
    return fused, fusion_strip(image_a, image_b, fused.unsqueeze(0), lams, scale)


def fuse_pairs(loaded: LoadedModel, pairs: list[tuple[ImageRef, ImageRef]], lam: float, settings: FusionSettings,
               folder: Path, seed: int = 0, batch_size: int = 50, image_format: str = "png",
               scale: int = 1, progress: bool = True) -> Path:
    """Fuse each pair at `lam` into folder/1.<ext> ...; a preview of the first pairs and a
    manifest naming each image's inputs go beside them."""
    preview_a, preview_b, preview_fused = [], [], []
    with tqdm(total=len(pairs), desc="fusing pairs", unit="pair", disable=not progress) as bar:
        for first in range(0, len(pairs), batch_size):
            chunk = pairs[first:first + batch_size]
            images_a = image_batch([a for a, _ in chunk], loaded)
            images_b = image_batch([b for _, b in chunk], loaded)
            lams = torch.full((len(chunk),), lam)
            fused = fuse(loaded, images_a, images_b, lams, settings, batch_generator(seed, first, loaded.device))
            write_numbered_images(folder, first, to_uint8(fused), image_format)
            room = max(0, PREVIEW_PAIRS - len(preview_a))
            preview_a += list(images_a[:room])
            preview_b += list(images_b[:room])
            preview_fused += list(fused[:room])
            bar.update(len(chunk))
    fusion_strip(torch.stack(preview_a), torch.stack(preview_b), torch.stack(preview_fused).unsqueeze(1), [lam],
                 scale).save(folder / PAIRS_PREVIEW)
    write_manifest(folder, pairs, image_format, {"lam": lam, **asdict(settings)})
    return folder / PAIRS_PREVIEW


def write_manifest(folder: Path, pairs: list[tuple[ImageRef, ImageRef]], image_format: str,
                   settings: dict[str, Any]) -> Path:
    """Which two inputs made each numbered image, and how."""
    manifest = {"previews": [PAIRS_PREVIEW], "settings": settings,
                "pairs": [{"image": f"{i}.{image_format}", "a": str(a), "b": str(b)}
                          for i, (a, b) in enumerate(pairs, 1)]}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
