"""`load_dataset`: one entry point for folders, zips and the builtin sets.

Builtins: `mnist` and `cifar10` (read from files already on disk; difflab
never downloads) and `shapes` (procedural, needs no files). A name is taken
as a builtin unless a file or folder of that name exists.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from difflab.data.base import BaseImageDataset, TensorImageDataset
from difflab.data.cifar import CIFAR_BATCH_FOLDER, is_cifar_batch_folder, read_cifar_batches
from difflab.data.dataset import ImageDataset
from difflab.data.mnist import find_mnist_file, read_idx_images
from difflab.data.options import check_image_size, check_max_images, parse_channels, spread_subset
from difflab.data.shapes import DEFAULT_NUM_IMAGES, make_shapes
from difflab.data.transforms import convert_channels_batch, resize_batch
from difflab.errors import OPTION, ConfigError, DataError

BUILTIN_DATASETS = ("mnist", "cifar10", "shapes")
SPLITS = ("train", "test")


def default_data_root() -> Path:
    """Where builtin datasets are looked for: $DIFFLAB_DATA, else ~/.cache/difflab."""
    return Path(os.environ.get("DIFFLAB_DATA") or Path.home() / ".cache" / "difflab").expanduser()


def load_dataset(
    source: str,
    image_size: int,
    channels: int | str = "auto",
    cache: bool | str = "auto",
    root: str | Path | None = None,
    *,
    max_images: int | None = None,
    progress: bool = True,
    split: str = "train",
    seed: int = 0,
    num_images: int = DEFAULT_NUM_IMAGES,
    workers: int | None = None,
) -> BaseImageDataset:
    """A dataset of square uint8 (C, S, S) images from a path or a builtin name.

    `root` is the folder holding builtin data (or, for cifar10, a zip of its
    images); `split` picks train/test for mnist and cifar10; `seed` and
    `num_images` shape the procedural `shapes` set. `cache` applies to files only:
    builtins always live in memory.
    """
    name = str(source).strip().lower()
    if Path(source).expanduser().exists():
        return ImageDataset(source, image_size, channels, cache, max_images, progress, workers)
    if name not in BUILTIN_DATASETS:
        raise DataError(
            f"{str(source)!r} is neither an existing folder, .zip or image file "
            f"nor a builtin dataset ({', '.join(BUILTIN_DATASETS)})"
        )
    if split not in SPLITS:
        raise ConfigError(f"{OPTION} must be one of {', '.join(SPLITS)}; got {split!r}", option="split")
    check_image_size(image_size)
    check_max_images(max_images)
    wanted_channels = parse_channels(channels)
    folders = _candidate_folders(root, name)
    if name == "shapes":
        images = make_shapes(min(num_images, max_images or num_images), image_size, seed)  # max_images caps
    elif name == "mnist":
        images = _mnist(folders, split, max_images)
    else:
        found = _find_cifar(folders, split)
        if found.is_file():  # a zip of JPEGs: read like any user archive
            return ImageDataset(found, image_size, channels, cache, max_images, progress, workers)
        images = _subset(torch.from_numpy(read_cifar_batches(found, split)), max_images)
    native_channels = images.shape[1]
    images = convert_channels_batch(resize_batch(images, image_size), wanted_channels or native_channels)
    return TensorImageDataset(images, name=name)


def _mnist(folders: list[Path], split: str, max_images: int | None) -> torch.Tensor:
    """MNIST digits, white on black, 28x28; resized (not padded) to the requested size
    so the digit fills the frame the same way at every size."""
    digits = read_idx_images(find_mnist_file(folders, split))
    return _subset(torch.from_numpy(digits.copy()).unsqueeze(1), max_images)


def _find_cifar(folders: list[Path], split: str) -> Path:
    """A cifar-10-batches-py folder, or a zip of CIFAR JPEGs such as cifar10-train-jpg.zip."""
    zip_name = f"cifar10-{split}-jpg.zip"
    for folder in folders:
        if folder.is_file():
            return folder
        for candidate in (folder, folder / CIFAR_BATCH_FOLDER):
            if is_cifar_batch_folder(candidate):
                return candidate
        if (folder / zip_name).is_file():
            return folder / zip_name
    places = " or ".join(str(folder) for folder in folders)
    raise DataError(
        f"CIFAR-10 not found in {places}: put the {CIFAR_BATCH_FOLDER} folder (data_batch_1..5, test_batch) "
        f"or {zip_name} there, or pass it as the data root ({OPTION} or DIFFLAB_DATA). "
        "difflab does not download datasets.", option="data_root"
    )


def _candidate_folders(root: str | Path | None, name: str) -> list[Path]:
    """The root itself and its `<name>` subfolder, so both .../mnist and its parent work."""
    base = Path(root).expanduser() if root is not None else default_data_root()
    return [base, base / name]


def _subset(images: torch.Tensor, max_images: int | None) -> torch.Tensor:
    indices = spread_subset(range(len(images)), max_images)
    return images if len(indices) == len(images) else images[indices]
