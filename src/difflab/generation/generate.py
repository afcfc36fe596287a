"""Generate any number of images in batches, reproducibly, with any of the samplers."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from difflab.errors import ConfigError
from difflab.generation.model_io import LoadedModel
from difflab.generation.outputs import check_finite
from difflab.samplers import FEW_STEP_SAMPLERS, Callback, sample_ddpm
from difflab.viz.grid import to_uint8

SAMPLER_NAMES = ("ddpm", *FEW_STEP_SAMPLERS)
DEFAULT_STEPS = {"ddim": 50, "dpmpp-2m": 20}  # DDPM always runs all T steps
DISPLAY_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp-2m": "DPM-Solver++(2M)"}


def sampler_steps(sampler: str, steps: int | None, timesteps: int) -> int:
    """Network evaluations per image: all T for DDPM, else --steps or the sampler's default."""
    if sampler not in SAMPLER_NAMES:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLER_NAMES)}; got {sampler!r}")
    return timesteps if sampler == "ddpm" else steps or DEFAULT_STEPS[sampler]


def sampler_label(sampler: str, steps: int | None, timesteps: int) -> str:
    """E.g. DDIM-50, DDPM-1000, DPM-Solver++(2M)-20."""
    return f"{DISPLAY_NAMES[sampler]}-{sampler_steps(sampler, steps, timesteps)}"


def run_sampler(loaded: LoadedModel, noise: Tensor, sampler: str = "ddim", steps: int | None = None,
                eta: float = 0.0, spacing: str = "uniform", callback: Callback | None = None,
                generator: torch.Generator | None = None, progress: bool = False, clip: str | None = None) -> Tensor:
    """Denoise `noise` (x_T) into images in [-1, 1] with the named sampler."""
    count = sampler_steps(sampler, steps, loaded.schedule.timesteps)  # also rejects unknown names
    denoiser = loaded.denoiser(clip)
    if sampler == "ddpm":
        if steps not in (None, count):
            raise ConfigError(f"--steps: DDPM always runs all {count} steps of the model; "
                              "use --sampler ddim or dpmpp-2m for fewer steps")
        return sample_ddpm(denoiser, noise, loaded.schedule, callback=callback, generator=generator, progress=progress)
    return FEW_STEP_SAMPLERS[sampler](denoiser, noise, loaded.schedule, steps=count, eta=eta, spacing=spacing,
                                      callback=callback, generator=generator, progress=progress)


def batch_generator(seed: int, first_index: int, device: torch.device) -> torch.Generator:
    """The random stream for the batch starting at image `first_index`: fixed by the seed."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + first_index)


def autocast_for(device: torch.device, precision: str):
    """bf16/fp16 autocast when asked for (bf16 only on CPU); a no-op context otherwise."""
    if precision == "no" or (device.type == "cpu" and precision != "bf16"):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def generate_images(loaded: LoadedModel, count: int, batch_size: int = 250, sampler: str = "ddim",
                    steps: int | None = None, eta: float = 0.0, seed: int = 0, precision: str = "no",
                    spacing: str = "uniform", clip: str | None = None) -> Iterator[tuple[int, Tensor]]:
    """Yield (index of the batch's first image, uint8 images (B, C, H, W) on the CPU) until
    `count` images are made; each batch's noise is seeded by (seed, first index)."""
    if count <= 0:
        raise ConfigError(f"-n must be positive; got {count}")
    if batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive; got {batch_size}")
    device = loaded.device
    for first in range(0, count, batch_size):
        size = min(batch_size, count - first)
        generator = batch_generator(seed, first, device)
        noise = torch.randn(size, *loaded.image_shape(), device=device, generator=generator)
        with torch.inference_mode(), autocast_for(device, precision):
            images = run_sampler(loaded, noise, sampler, steps, eta, spacing, generator=generator, clip=clip)
        check_finite(images)  # NaN weights or a bad option: a message, not black images
        yield first, to_uint8(images)
