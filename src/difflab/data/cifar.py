"""Reading CIFAR-10 from the standard `cifar-10-batches-py` pickle files.

Pickles can run arbitrary code, so they are read with an unpickler that only
allows the numpy types the official batches contain.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from difflab.errors import DataError

CIFAR_BATCH_FOLDER = "cifar-10-batches-py"
CIFAR_BATCH_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch file")
        return super().find_class(module, name)


def is_cifar_batch_folder(folder: Path) -> bool:
    return (folder / CIFAR_BATCH_FILES["test"][0]).is_file() or (folder / CIFAR_BATCH_FILES["train"][0]).is_file()


def read_cifar_batches(folder: Path, split: str) -> np.ndarray:
    """uint8 (N, 3, 32, 32) images of `split` ("train" or "test")."""
    arrays = []
    for name in CIFAR_BATCH_FILES[split]:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                batch = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
            arrays.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as error:
            raise DataError(f"cannot read CIFAR-10 batch {path}: {error}") from error
    return np.concatenate(arrays)
