"""Checkpoints: one safetensors file per save, written atomically, loaded without pickle.

A checkpoint holds named groups of tensors (`model.*`, `ema.*`, `optimizer.*`, `rng.*`)
and JSON metadata (step, the resolved configuration, optimizer hyper-parameters,
grad-scaler state). safetensors cannot execute code on load, so checkpoints from
strangers are safe to open. Nothing here is diffusion-specific: another model family
(a GAN, a deep image prior) saves its own groups through the same functions.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from difflab.errors import DataError

FORMAT = "difflab-checkpoint/1"
CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{8})\.safetensors$")
LATEST = "latest.json"


@dataclass
class Checkpoint:
    step: int
    config: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # group -> name -> tensor
    meta: dict[str, Any] = field(default_factory=dict)  # other JSON-able state
    path: Path | None = None


# ---- writing -------------------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call write(temp_path), fsync it and rename it over `path`: a crash at any point leaves
    either the old file or the complete new one, never a partial file under `path`."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
    finally:
        if temp.exists():
            temp.unlink()


def save_checkpoint(folder: Path, checkpoint: Checkpoint, keep: int = 3) -> Path:
    """Write ckpt-<step>.safetensors atomically, point latest.json at it, prune old ones."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {f"{group}.{name}": tensor.detach().contiguous().cpu()
            for group, tensors in checkpoint.tensors.items() for name, tensor in tensors.items()}
    metadata = {"format": FORMAT, "step": str(checkpoint.step), "config": json.dumps(checkpoint.config),
                "meta": json.dumps(checkpoint.meta)}
    path = folder / f"ckpt-{checkpoint.step:08d}.safetensors"
    atomic_write(path, lambda temp: save_file(flat, str(temp), metadata=metadata))
    atomic_write(folder / LATEST, lambda temp: temp.write_text(json.dumps({"checkpoint": path.name, "step": checkpoint.step})))
    for old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


# ---- reading -------------------------------------------------------------------------------------

def checkpoint_step(path: Path) -> int:
    """The step in a ckpt-<step>.safetensors name; -1 for any other file."""
    match = CHECKPOINT_PATTERN.match(Path(path).name)
    return int(match.group(1)) if match else -1


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in `folder`, oldest first."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=checkpoint_step)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the latest one in a run folder (its checkpoints/ sub-folder too)."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        latest = folder / LATEST
        if latest.is_file():
            try:
                candidate = folder / json.loads(latest.read_text())["checkpoint"]
                if candidate.is_file():
                    return candidate
            except (ValueError, KeyError):
                pass  # fall back to scanning
        found = list_checkpoints(folder)
        if found:
            return found[-1]
    raise DataError(f"no checkpoint found at {str(path)!r}: give a run folder made by `difflab train` "
                    "or a ckpt-*.safetensors file")


def load_checkpoint(path: str | Path, groups: tuple[str, ...] | None = None, device: str = "cpu") -> Checkpoint:
    """Read a checkpoint (only `groups` of tensors, if given). No code is executed."""
    file = find_checkpoint(path)
    try:
        with safe_open(str(file), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise DataError(f"{file} is not a difflab checkpoint (format {metadata.get('format')!r})")
            tensors: dict[str, dict[str, torch.Tensor]] = {}
            for key in handle.keys():
                group, name = key.split(".", 1)
                if groups is None or group in groups:
                    tensors.setdefault(group, {})[name] = handle.get_tensor(key)
    except SafetensorError as error:
        raise DataError(f"{file} is not a readable checkpoint: {error}") from None
    return Checkpoint(step=int(metadata["step"]), config=json.loads(metadata["config"]),
                      tensors=tensors, meta=json.loads(metadata.get("meta", "{}")), path=file)


# ---- state helpers -------------------------------------------------------------------------------

def optimizer_to_checkpoint(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (per-parameter state) and JSON (the rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_checkpoint(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                              meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_checkpoint() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global random states (torch CPU and CUDA as tensors, Python and NumPy as JSON)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    meta = {"numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "python": [python_state[0], list(python_state[1]), python_state[2]]}
    return tensors, meta


def rng_from_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"].cpu())
    cuda_states = [tensors[k].cpu() for k in sorted(k for k in tensors if k.startswith("cuda_"))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    name, keys, *rest = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
