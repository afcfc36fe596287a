"""Writing generated images: numbered files (1.jpg ... N.jpg, the homework's format) that
never silently replace a user's files.

Every image is written atomically (a temporary file in the same folder, then a rename), so a
full disk or a kill never leaves a 0-byte or truncated image under a real name. `--overwrite`
removes only what an earlier difflab command wrote there (the images and previews its
manifest lists), so exactly the new set remains.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import torch
from PIL import Image

from difflab.errors import OPTION, ConfigError, DataError
from difflab.viz.grid import make_grid, to_pil

IMAGE_FORMATS = ("jpg", "png")
MANIFEST = "difflab-sample.json"  # written by sample (and fuse) beside the images
NUMBERED = re.compile(r"^[1-9]\d*\.(jpg|png)$")
_PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}


def prepare_output_folder(folder: Path, count: int, extension: str, overwrite: bool) -> Path:
    """Create `folder`; refuse (naming the overwrite option) if any file we would write already exists.
    With `overwrite`, first remove the files an earlier difflab command recorded in its manifest
    there (numbered images, previews, the manifest itself); the user's other files stay."""
    if extension not in IMAGE_FORMATS:
        raise ConfigError(f"{OPTION} must be one of {', '.join(IMAGE_FORMATS)}; got {extension!r}", option="format")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{OPTION} {folder} exists and is not a folder", option="out")
    if folder.is_dir() and not overwrite:
        clashes = [name for name in (f"{i}.{extension}" for i in range(1, count + 1)) if (folder / name).exists()]
        clashes += [name for name in ("grid.png",) if (folder / name).exists()]
        if clashes:
            shown = ", ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else "")
            raise ConfigError(f"{OPTION} {folder} already holds {len(clashes)} file(s) this would overwrite "
                              f"({shown}); pass {{option:overwrite}} to replace them or choose another {OPTION}",
                              option="out")
    if folder.is_dir() and overwrite:
        removed = remove_earlier_outputs(folder)
        if removed:
            names = [path.name for path in removed]
            print(f"difflab: overwriting: removed {len(removed)} file(s) an earlier difflab command wrote in {folder} "
                  f"({', '.join(names[:4])}{' ...' if len(names) > 4 else ''})", file=sys.stderr)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{OPTION} {folder}: cannot create it ({error.strerror or error})", option="out") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(f"{OPTION} {folder} is not writable (read-only file system or no permission)", option="out")
    return folder


def earlier_outputs(folder: Path) -> list[Path]:
    """The files an earlier difflab command wrote in `folder`, as its manifest records them:
    its image list (or, for manifests without one, the numbered images), its previews, itself.
    Nothing without a manifest: numbered files alone do not prove difflab wrote them."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return []
    listed = manifest.get("images")
    names = {name for name in listed if isinstance(name, str)} if isinstance(listed, list) else set()
    if not names:  # older manifests: the numbered images by pattern
        names = {path.name for path in folder.iterdir() if NUMBERED.match(path.name)}
    names |= {name for name in manifest.get("previews", []) if isinstance(name, str)}
    names |= {pair["image"] for pair in manifest.get("pairs", []) if isinstance(pair, dict) and "image" in pair}
    found = [folder / name for name in sorted(names) if _plain_name(name) and (folder / name).is_file()]
    return found + [folder / MANIFEST]


def remove_earlier_outputs(folder: Path) -> list[Path]:
    """Delete earlier_outputs(folder), the manifest first (so an interruption never leaves a
    manifest naming files that are gone); returns what was removed."""
    files = earlier_outputs(folder)
    removed = []
    for path in sorted(files, key=lambda p: p.name != MANIFEST):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def read_manifest(folder: Path) -> dict | None:
    """The folder's difflab-sample.json, or None when absent or not a JSON object."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def write_manifest(folder: Path, manifest: dict) -> Path:
    """Write the manifest atomically: readers see the old one or the new one, never half."""
    path = Path(folder) / MANIFEST
    atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path


def write_numbered_images(folder: Path, first_index: int, images: torch.Tensor, extension: str = "jpg",
                          quality: int = 95, written: list[str] | None = None) -> list[Path]:
    """Save images as <first_index + 1>.<ext>, ... (1-based, as the homework submits them);
    each file is complete or absent, never partial. `written`, if given, gets each file's name
    as soon as it is complete (so a failure mid-batch still knows what is on disk)."""
    paths = []
    for offset, image in enumerate(images):
        path = Path(folder) / f"{first_index + offset + 1}.{extension}"
        save_image_atomically(to_pil(image), path, quality=quality)
        paths.append(path)
        if written is not None:
            written.append(path.name)
    return paths


def save_grid_atomically(images: torch.Tensor, path: Path, columns: int | None = None) -> Path:
    """viz.grid.save_grid, written through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomically(make_grid(images, columns), path)
    return path


def save_image_atomically(image: Image.Image, path: Path, quality: int = 95) -> None:
    path = Path(path)
    extension = path.suffix.lower().lstrip(".")
    image_format = _PIL_FORMATS.get(extension)
    options = {"quality": quality} if image_format == "JPEG" else {}
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            image.save(handle, format=image_format, **options)
            handle.flush()
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`data` to `path` atomically (training.checkpoint.atomic_write: temp file, fsync, rename)."""
    from difflab.training.checkpoint import atomic_write
    atomic_write(Path(path), lambda temp: temp.write_bytes(data))


def check_finite(images: torch.Tensor, what: str = "the sampler") -> None:
    """DataError when generated images (in model space, before uint8) hold NaN or infinity:
    converted, they would silently become black images."""
    if images.is_floating_point() and not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise DataError(f"{what} produced NaN or infinite values in {bad} of {len(images)} images; nothing was "
                        "written for them. The checkpoint may hold diverged weights, or the sampler settings "
                        "(eta, fp16 precision) overflow: try precision 'no' (fp32) or an earlier checkpoint")


def _plain_name(name: str) -> bool:
    """A file name in the folder itself: no separators, no '..' (a manifest is data, not a command)."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")
