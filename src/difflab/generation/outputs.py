"""Writing generated images: numbered files (1.jpg ... N.jpg, the homework's format) that
never silently replace a user's files."""
from __future__ import annotations

from pathlib import Path

import torch

from difflab.errors import ConfigError
from difflab.viz.grid import to_pil

IMAGE_FORMATS = ("jpg", "png")


def prepare_output_folder(folder: Path, count: int, extension: str, overwrite: bool) -> Path:
    """Create `folder`; refuse (naming --overwrite) if any file we would write already exists."""
    if extension not in IMAGE_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(IMAGE_FORMATS)}; got {extension!r}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} exists and is not a folder")
    if folder.is_dir() and not overwrite:
        clashes = [name for name in (f"{i}.{extension}" for i in range(1, count + 1)) if (folder / name).exists()]
        clashes += [name for name in ("grid.png",) if (folder / name).exists()]
        if clashes:
            shown = ", ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else "")
            raise ConfigError(f"--out {folder} already holds {len(clashes)} file(s) this would overwrite "
                              f"({shown}); pass --overwrite to replace them or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_numbered_images(folder: Path, first_index: int, images: torch.Tensor, extension: str = "jpg",
                          quality: int = 95) -> list[Path]:
    """Save images as <first_index + 1>.<ext>, ... (1-based, as the homework submits them)."""
    paths = []
    for offset, image in enumerate(images):
        path = Path(folder) / f"{first_index + offset + 1}.{extension}"
        options = {"quality": quality} if extension == "jpg" else {}
        to_pil(image).save(path, **options)
        paths.append(path)
    return paths
