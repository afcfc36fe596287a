"""Helpers shared by the peer benchmark scripts (`lucidrains_ddpm.py`, `diffusers_peer.py`).

The peers are measured with the same clock, the same data decoding and the same
result format as difflab, so that a driver can run all of them in one session
and put the numbers side by side. Nothing here imports difflab or a peer
library: each peer script imports only its own library, so that a missing or
broken peer cannot take the others down.

Conventions every script follows:
  * timings are wall-clock `time.perf_counter()` around code that ends with
    `torch.cuda.synchronize()` on a GPU, so queued kernels are counted;
  * the last line of stdout is `RESULT {json}`, which a driver parses
    (`parse_result_line`); everything else on stdout/stderr is free-form log.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import math
import os
import platform
import statistics
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
RESULT_PREFIX = "RESULT "


# --------------------------------------------------------------------------------------------
# Device, precision and reporting
# --------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    """'auto' means the GPU when there is one: the peer scripts are GPU benchmarks first."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no GPU")
    return device


def set_precision(precision: str, device: torch.device) -> None:
    """Fix the float32 matmul/conv mode explicitly, so that a run never inherits a global default.

    bf16: autocast to bfloat16 (see `autocast`); leftover fp32 matmuls keep torch's defaults.
    tf32: no autocast; fp32 tensors, TF32 tensor cores for matmuls and convolutions.
    fp32: no autocast; full-precision matmuls and convolutions.
    """
    if precision not in ("bf16", "tf32", "fp32"):
        raise SystemExit(f"unknown precision {precision!r}")
    if device.type != "cuda":
        return
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif precision == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for 'bf16', nothing otherwise (bf16 needs no GradScaler)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads: int) -> None:
    """On CPU the thread count dominates the result; a driver must pin it to compare peers fairly."""
    if threads > 0:
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # only settable before the first inter-op use
            torch.set_num_interop_threads(max(1, min(threads, 4)))


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["cpu_threads"] = torch.get_num_threads()
        info["cpu_count"] = os.cpu_count()
    return info


def emit_result(payload: dict[str, Any]) -> None:
    """Print the one machine-readable line a driver looks for (always last, always flushed)."""
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(payload, sort_keys=True, default=_json_default), flush=True)


def parse_result_line(text: str) -> dict[str, Any]:
    """For drivers: the payload of the last `RESULT {...}` line of a script's stdout."""
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise ValueError("no RESULT line in the output")


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
def time_steps(step: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of `steps` calls of `step`, each synchronised, after `warmup` untimed calls.

    Synchronising every step costs a little throughput but gives a per-step
    distribution, whose median ignores stragglers (allocator growth, other tenants).
    """
    for _ in range(warmup):
        step()
    sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def time_pipelined(step: Callable[[], Any], steps: int, device: torch.device, blocks: int = 3) -> list[float]:
    """Seconds per step of `blocks` runs of `steps // blocks` calls, synchronised once per run: the
    GPU's queue stays full, as in a loop that reads its loss only now and then (difflab's reads it
    every --log-every steps). `time_steps` synchronises every step, as a loop that calls
    `loss.item()` every step does (denoising-diffusion-pytorch's Trainer, for its progress bar)."""
    per_block = max(1, steps // blocks)
    times = []
    for _ in range(blocks):
        sync(device)
        start = time.perf_counter()
        for _ in range(per_block):
            step()
        sync(device)
        times.append((time.perf_counter() - start) / per_block)
    return times


def pipelined_stats(times: Sequence[float], batch: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {"step_s_pipelined": median, "images_per_s_pipelined": batch / median, "step_s_pipelined_blocks": list(times)}


def step_stats(times: Sequence[float], batch: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "step_s_median": median,
        "step_s_mean": statistics.fmean(times),
        "step_s_min": min(times),
        "step_s_max": max(times),
        "images_per_s": batch / median,
        "images_per_s_mean": batch * len(times) / sum(times),
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_report(device: torch.device, batch: int, baseline_bytes: int | None = None) -> dict[str, Any]:
    """Peak allocated bytes since the last reset, total and per image.

    The peak includes weights, EMA copy and optimizer state (`baseline_bytes`,
    measured before the timed steps), so the per-image figure is what a user
    actually pays; `activation_bytes_per_image` removes the fixed part.
    """
    if device.type != "cuda":
        return {"peak_memory_bytes": None, "peak_memory_mib_per_image": None}
    peak = torch.cuda.max_memory_allocated(device)
    # Reserved memory counts what CUDA-graph pools hold between replays; allocated does not.
    reserved = torch.cuda.max_memory_reserved(device)
    report: dict[str, Any] = {
        "peak_memory_bytes": peak,
        "peak_memory_gib": round(peak / 2**30, 3),
        "peak_memory_mib_per_image": round(peak / batch / 2**20, 3),
        "peak_reserved_mib_per_image": round(reserved / batch / 2**20, 3),
    }
    if baseline_bytes is not None:
        report["baseline_memory_bytes"] = baseline_bytes
        report["activation_mib_per_image"] = round((peak - baseline_bytes) / batch / 2**20, 3)
    return report


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def batch_candidates(start: int, cap: int) -> list[int]:
    """Powers of two from `start` up to `cap`: 64, 128, 256, ..."""
    out, b = [], start
    while b <= cap:
        out.append(b)
        b *= 2
    return out


def find_max_batch(fits: Callable[[int], bool], start: int, cap: int, log: Callable[[str], None] = print) -> int:
    """Largest batch for which `fits(batch)` holds: doubling from `start`, then one refinement.

    "Power-of-two-ish": after the first failure at 2b, 1.5b is tried as well, so the
    answer is b or 1.5b. `fits` must catch torch.cuda.OutOfMemoryError itself and
    free what it allocated; it returns False for an OOM.
    """
    best = 0
    for batch in batch_candidates(start, cap):
        ok = fits(batch)
        log(f"batch {batch}: {'fits' if ok else 'out of memory'}")
        if not ok:
            break
        best = batch
    else:
        return best
    if best:
        middle = best + best // 2
        if middle < 2 * best:
            ok = fits(middle)
            log(f"batch {middle}: {'fits' if ok else 'out of memory'}")
            if ok:
                best = middle
    return best


# --------------------------------------------------------------------------------------------
# Data: decode a folder or .zip of images once into one uint8 tensor
# --------------------------------------------------------------------------------------------
def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(size) + CenterCrop(size) on a PIL image, which is what both
    DDP's Dataset and diffusers' example do: shorter side to `size` (bilinear,
    antialiased for PIL), then the centre square."""
    img = img.convert("RGB")
    w, h = img.size
    if min(w, h) != size:
        # torchvision computes the long side as int(size * long / short)
        new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        img = img.resize((new_w, new_h), Image.BILINEAR)
    w, h = img.size
    if (w, h) != (size, size):
        left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    return img


def _decode(data: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(_resize_center_crop(img, size), dtype=np.uint8)


def _iter_image_bytes(path: Path) -> Iterator[bytes]:
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            yield file.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist()
                           if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("__MACOSX"))
            for name in names:
                yield archive.read(name)
    else:
        raise SystemExit(f"--data {path}: not a folder or a .zip archive")


def load_images(path: str | Path, size: int, max_images: int = 0, workers: int = 0) -> torch.Tensor:
    """All images as one uint8 tensor (N, 3, size, size), decoded once, in file-name order.

    Decoding everything up front takes the data pipeline out of the comparison:
    the benchmark measures the diffusion library, not JPEG decoding. (DDP's own
    Trainer decodes in DataLoader workers every epoch.)
    """
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"--data {path}: no such file or folder")
    blobs = list(_iter_image_bytes(path))
    if max_images:
        blobs = blobs[:max_images]
    if not blobs:
        raise SystemExit(f"--data {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while decoding
        arrays = list(pool.map(lambda b: _decode(b, size), blobs, chunksize=64))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class InMemoryBatches:
    """Shuffled epochs over a uint8 image tensor kept on the device, with random horizontal
    flips (as DDP's Trainer and diffusers' example both use). Yields float images in [0, 1]."""

    def __init__(self, images_u8: torch.Tensor, batch: int, device: torch.device, hflip: bool = True,
                 seed: int = 0) -> None:
        if len(images_u8) < batch:
            raise SystemExit(f"batch {batch} is larger than the data set ({len(images_u8)} images)")
        self.images = images_u8.to(device)
        self.batch = batch
        self.device = device
        self.hflip = hflip
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long, device=device)
        self._pos = 0

    def next(self) -> torch.Tensor:
        if self._pos + self.batch > len(self._order):  # drop the ragged tail, like drop_last
            self._order = torch.randperm(len(self.images), generator=self.generator, device=self.device)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch]
        self._pos += self.batch
        x = self.images[idx].float().div_(255.0)
        if self.hflip:
            flip = torch.rand(self.batch, generator=self.generator, device=self.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


# --------------------------------------------------------------------------------------------
# Saving samples
# --------------------------------------------------------------------------------------------
def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8, rounding as torchvision.save_image does."""
    x = images.detach().float().clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def save_images(images: torch.Tensor, folder: str | Path, quality: int = 95, start: int = 1) -> int:
    """Write 1.jpg, 2.jpg, ... (the layout the FD/featnet evaluation reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = to_uint8_hwc(images)
    for i, array in enumerate(arrays):
        Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(
            folder / f"{start + i}.jpg", quality=quality)
    return len(arrays)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2) -> None:
    """A torchvision-style grid (black 2-pixel padding) without needing torchvision."""
    arrays = to_uint8_hwc(images)
    n, h, w, c = arrays.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    grid = np.zeros((padding + nrows * (h + padding), padding + ncol * (w + padding), c), dtype=np.uint8)
    for i, array in enumerate(arrays):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = array
    Image.fromarray(grid.squeeze(-1) if c == 1 else grid).save(path)


def groups(total: int, size: int) -> list[int]:
    """1000, 250 -> [250, 250, 250, 250]; 1001, 250 -> [..., 1]."""
    return [size] * (total // size) + ([total % size] if total % size else [])
