"""Reading MNIST from its original IDX files (gzipped or not).

difflab never downloads data: the files must already be on disk.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from difflab.errors import OPTION, DataError

MNIST_IMAGE_FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}
_IDX_UBYTE_3D = 0x00000803  # magic number: unsigned bytes, 3 dimensions


def find_mnist_file(folders: list[Path], split: str) -> Path:
    """The IDX image file for `split` in the first folder that has it (.gz or plain)."""
    name = MNIST_IMAGE_FILES[split]
    for folder in folders:
        for candidate in (folder / name, folder / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    places = " or ".join(str(folder) for folder in folders)
    raise DataError(
        f"MNIST {split} images not found: put {name} in {places} "
        f"(the canonical files are {', '.join(MNIST_IMAGE_FILES.values())}), or pass their folder as the "
        f"data root ({OPTION} or DIFFLAB_DATA). difflab does not download datasets.", option="data_root"
    )


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 (N, rows, cols) array from an IDX3 image file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read MNIST file {path}: {error}") from error
    header = np.frombuffer(data[:16], dtype=">u4")
    if len(header) < 4 or header[0] != _IDX_UBYTE_3D:
        raise DataError(f"{path} is not an IDX image file (bad magic number)")
    count, rows, cols = (int(value) for value in header[1:])
    if len(data) != 16 + count * rows * cols:
        raise DataError(f"{path} is truncated: header says {count} images of {rows}x{cols}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
