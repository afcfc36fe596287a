"""Checkpoints: one safetensors file per save, written atomically, loaded without pickle.

A checkpoint holds named groups of tensors (`model.*`, `ema.*`, `optimizer.*`, `rng.*`)
and JSON metadata (step, the resolved configuration, optimizer hyper-parameters,
grad-scaler state). safetensors cannot execute code on load, so checkpoints from
strangers are safe to open. Nothing here is diffusion-specific: another model family
(a GAN, a deep image prior) saves its own groups through the same functions.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from difflab.errors import ConfigError, DataError

FORMAT = "difflab-checkpoint/1"
CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{8})\.safetensors$")
LATEST = "latest.json"
# atomic_write's temporary files: .<name>.<pid>.tmp
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
# A network this large cannot be what the user meant (fp32 weights alone would be 16 GB; the
# optimiser and EMA triple it); checked before allocating (see check_parameter_count).
MAX_PARAMETERS = 4_000_000_000


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
        os.chmod(temp, 0o666 & ~current_umask())  # writers such as safetensors may create 0600 files
        os.replace(temp, path)
        _fsync_dir(path.parent)
    finally:
        if temp.exists():
            temp.unlink()


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask only sets)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def clean_orphaned_temp_files(folder: str | Path) -> list[Path]:
    """Delete atomic_write's temporary files (.<name>.<pid>.tmp) in `folder` whose writer is no
    longer running (killed mid-write); returns what was removed. Call it at the start of a run,
    holding the run's lock. Files of live processes (or of this one) are left alone."""
    from difflab.training.run_lock import pid_alive

    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMP_PATTERN.match(path.name)
        if not match or not path.is_file():
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


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


def _latest_target(folder: Path) -> Path | None:
    """The checkpoint latest.json points at, if latest.json is valid and the file exists; a corrupt
    latest.json (not an object, no string "checkpoint", a name that is not ckpt-<step>) is
    reported and ignored: the folder is scanned instead."""
    latest = folder / LATEST
    if not latest.is_file():
        return None
    try:
        record = json.loads(latest.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    name = record.get("checkpoint") if isinstance(record, dict) else None
    if not isinstance(name, str) or not CHECKPOINT_PATTERN.match(name):
        warnings.warn(f"difflab: {latest} is corrupt (expected {{\"checkpoint\": \"ckpt-<step>.safetensors\"}}); "
                      "scanning the folder for checkpoints instead", RuntimeWarning, stacklevel=3)
        return None
    candidate = folder / name
    return candidate if candidate.is_file() else None


def checkpoint_candidates(path: str | Path) -> list[Path]:
    """The checkpoints a run folder offers, best first: the one latest.json names, then the rest
    newest first (the run's checkpoints/ sub-folder, else the folder itself). A file: just it."""
    path = Path(path)
    if path.is_file():
        return [path]
    for folder in (path / "checkpoints", path):
        found = list(reversed(list_checkpoints(folder)))
        target = _latest_target(folder)
        if target is not None:
            found = [target] + [p for p in found if p.name != target.name]
        if found:
            return found
    return []


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the latest one in a run folder (its checkpoints/ sub-folder too)."""
    found = checkpoint_candidates(path)
    if found:
        return found[0]
    raise DataError(f"no checkpoint found at {str(path)!r}: give a run folder made by `difflab train` "
                    "or a ckpt-*.safetensors file")


def load_checkpoint(path: str | Path, groups: tuple[str, ...] | None = None, device: str = "cpu") -> Checkpoint:
    """Read a checkpoint (only `groups` of tensors, if given). No code is executed.

    For a run folder, a newest checkpoint that cannot be read (truncated, corrupt) is skipped
    with a warning naming it, and the newest readable one is loaded; the bad file is kept."""
    candidates = checkpoint_candidates(path)
    if not candidates:
        find_checkpoint(path)  # raises the "no checkpoint found" error
    if Path(path).is_file():
        return read_checkpoint_file(candidates[0], groups, device)
    errors = []
    for file in candidates:
        try:
            checkpoint = read_checkpoint_file(file, groups, device)
        except DataError as error:
            errors.append(str(error))
            continue
        for message in errors:
            warnings.warn(f"difflab: skipping a checkpoint that cannot be read ({message}); using {file.name} "
                          "instead. The bad file is left in place", RuntimeWarning, stacklevel=2)
        return checkpoint
    raise DataError(f"none of the {len(candidates)} checkpoint(s) in {path} can be read; the newest: {errors[0]}")


def load_latest_readable(run_dir: str | Path, groups: tuple[str, ...] | None = None, device: str = "cpu") -> Checkpoint:
    """The newest readable checkpoint of a run folder (load_checkpoint on a folder does this)."""
    return load_checkpoint(run_dir, groups, device)


def read_checkpoint_file(file: str | Path, groups: tuple[str, ...] | None = None, device: str = "cpu") -> Checkpoint:
    """One checkpoint file; anything wrong with it (not safetensors, not difflab's, missing or
    malformed step/config/meta, unreadable) is a DataError naming the file."""
    file = Path(file)
    try:
        with safe_open(str(file), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise DataError(f"{file} is not a difflab checkpoint (format {metadata.get('format')!r})")
            tensors: dict[str, dict[str, torch.Tensor]] = {}
            for key in handle.keys():
                group, dot, name = key.partition(".")
                if not dot:
                    raise DataError(f"{file}: tensor {key!r} belongs to no group (expected group.name)")
                if groups is None or group in groups:
                    tensors.setdefault(group, {})[name] = handle.get_tensor(key)
    except (SafetensorError, OSError) as error:
        raise DataError(f"{file} is not a readable checkpoint: {error}") from None
    except Exception as error:  # safetensors raises plain exceptions for some malformed headers
        if isinstance(error, DataError):
            raise
        raise DataError(f"{file} is not a readable checkpoint: {type(error).__name__}: {error}") from None
    if "step" not in metadata:
        raise DataError(f"{file} records no step; it is not a complete difflab checkpoint")
    try:
        step = int(metadata["step"])
    except ValueError:
        raise DataError(f"{file}: its step {metadata['step']!r} is not a number") from None
    fields = {}
    for key, default in (("config", None), ("meta", "{}")):
        text = metadata.get(key, default)
        if text is None:
            raise DataError(f"{file} records no training configuration; it is not a complete difflab checkpoint")
        try:
            fields[key] = json.loads(text)
        except ValueError as error:
            raise DataError(f"{file}: its {key} is not valid JSON ({error})") from None
        if not isinstance(fields[key], dict):
            raise DataError(f"{file}: its {key} is a JSON {type(fields[key]).__name__}, not an object")
    return Checkpoint(step=step, config=fields["config"], tensors=tensors, meta=fields["meta"], path=file)


# ---- validating before use -------------------------------------------------------------------

def validate_checkpoint_meta(checkpoint: Checkpoint, groups: tuple[str, ...] = (),
                             meta_keys: tuple[str, ...] = ()) -> None:
    """Raise DataError, naming the file, if tensor `groups` (e.g. ("ema",)) or `meta_keys`
    (e.g. ("image_channels",)) are missing, or the step is negative. Call after loading, before
    building anything from the checkpoint."""
    file = checkpoint.path or "the checkpoint"
    if checkpoint.step < 0:
        raise DataError(f"{file}: step {checkpoint.step} is negative")
    missing = [group for group in groups if not checkpoint.tensors.get(group)]
    if missing:
        present = ", ".join(sorted(checkpoint.tensors)) or "none"
        raise DataError(f"{file} holds no {' or '.join(repr(g) for g in missing)} weights (groups present: "
                        f"{present}); it is incomplete or from another program")
    absent = [key for key in meta_keys if key not in checkpoint.meta]
    if absent:
        raise DataError(f"{file} does not record {', '.join(absent)}; it is incomplete or from another program")


def count_parameters_without_allocating(build: Callable[[], torch.nn.Module]) -> int:
    """Parameters of the module `build()` makes, built on the meta device: no memory is allocated."""
    with torch.device("meta"):
        module = build()
    return sum(parameter.numel() for parameter in module.parameters())


def estimate_unet_parameters(channels: int, dim_mults: tuple[int, ...], res_blocks: int,
                             image_channels: int = 3) -> int:
    """A quick estimate (typically 0.7-0.8x of the true count) of a difflab U-Net's parameters, from
    arithmetic alone: use it to reject absurd configurations before even a meta build."""
    widths = [channels * mult for mult in dim_mults]
    total = 16 * channels * channels  # time embedding
    for width in widths:
        # encoder + decoder residual blocks (two 3x3 convs each, plus skip/emb projections)
        total += (2 * res_blocks + 1) * (2 * 9 * width * width + 4 * channels * width + 4 * width * width)
    total += 4 * 9 * widths[-1] * widths[-1]  # middle block
    total += 2 * 9 * channels * image_channels
    return int(total)


def check_parameter_count(count: int, source: str = "the configuration", limit: int = MAX_PARAMETERS) -> None:
    """DataError when a network would have more than `limit` parameters (or a non-finite count)."""
    if not math.isfinite(count) or count > limit:
        raise DataError(f"{source} describes a network of about {count:,.0f} parameters (more than {limit:,}); "
                        "it is corrupt or not meant for this machine (check its configuration's channels, "
                        "dim_mults and res_blocks)")


def check_state_dict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """DataError naming missing, unexpected and wrongly shaped tensors, before load_state_dict
    (whose RuntimeError would be a traceback). `module` may live on the meta device."""
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{name} {tuple(tensors[name].shape)} instead of {shape}" for name, shape in expected.items()
             if name in tensors and tuple(tensors[name].shape) != shape]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if names:
            problems.append(f"{len(names)} {label} ({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})")
    if problems:
        raise DataError(f"{source} does not match the network its configuration describes: {'; '.join(problems)}")


def load_state_checked(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """check_state_dict, then load_state_dict; non-finite weights are a DataError too."""
    check_state_dict(module, tensors, source)
    bad = [name for name, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise DataError(f"{source} holds NaN or infinite weights ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
                        "the run diverged before this checkpoint was written. Use an earlier checkpoint")
    module.load_state_dict(tensors)


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


def network_state(model: Any, ema: Any, optimizer: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """A one-network family's resume state (diffusion, the denoiser): weights, EMA and optimiser, as
    tensor groups and JSON. `optimizer` may be accelerate's wrapper."""
    optimizer_tensors, optimizer_meta = optimizer_to_checkpoint(getattr(optimizer, "optimizer", optimizer))
    return ({"model": model.state_dict(), "ema": ema.shadow.state_dict(), "optimizer": optimizer_tensors},
            {"ema": ema.state_dict(), "optimizer": optimizer_meta})


def load_network_state(model: Any, ema: Any, optimizer: Any, tensors: dict[str, dict[str, Any]],
                       meta: dict[str, Any]) -> None:
    """Restore what `network_state` returned."""
    model.load_state_dict(tensors["model"])
    ema.shadow.load_state_dict(tensors["ema"])
    ema.load_state_dict(meta["ema"])
    optimizer_from_checkpoint(optimizer, tensors.get("optimizer", {}), meta["optimizer"])


def network_from_checkpoint(checkpoint: Checkpoint, weights: str, parse_config: Callable[[dict], Any],
                            build: Callable[[Any, int], torch.nn.Module]) -> tuple[torch.nn.Module, Any, int]:
    """(network, config, image channels) of a one-network checkpoint, every check made before anything is
    allocated, so a stranger's file fails with a message: the metadata, the saved configuration
    (`parse_config`), the parameter count of `build(config, channels)`, then the weights `weights`."""
    validate_checkpoint_meta(checkpoint, groups=(weights,), meta_keys=("image_channels",))
    try:
        config = parse_config(checkpoint.config)
    except ConfigError as error:
        raise DataError(f"{checkpoint.path}: its saved configuration is invalid ({error})") from None
    channels = int(checkpoint.meta["image_channels"])
    check_parameter_count(count_parameters_without_allocating(lambda: build(config, channels)), str(checkpoint.path))
    network = build(config, channels)
    load_state_checked(network, checkpoint.tensors[weights], str(checkpoint.path))
    return network, config, channels
