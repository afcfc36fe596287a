"""Generate any number of images in batches, reproducibly, with any of the samplers."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from difflab.errors import ConfigError
from difflab.generation.model_io import LoadedModel
from difflab.generation.outputs import check_finite
from difflab.samplers import DEFAULT_SAMPLER, Callback, get_sampler, timesteps_for
from difflab.viz.grid import to_uint8


def sampler_steps(sampler: str, steps: int | None, timesteps: int) -> int:
    """Network evaluations per image: `steps`, else the sampler's default (all T for DDPM)."""
    return get_sampler(sampler).steps_for(timesteps, steps)  # also rejects unknown names


def sampler_label(sampler: str, steps: int | None, timesteps: int) -> str:
    """E.g. DDIM-50, DDPM-1000, DPM-Solver++(2M)-20."""
    return f"{get_sampler(sampler).display_name}-{sampler_steps(sampler, steps, timesteps)}"


def sampler_timesteps(sampler: str, steps: int | None, timesteps: int, spacing: str = "uniform",
                      start_step: int | None = None) -> list[int]:
    """The timesteps the named sampler visits, in order (noisiest first), for a model of `timesteps` steps;
    from `start_step` down, "all" (DDPM's default) means all of start_step, ..., 0."""
    available = timesteps if start_step is None else start_step + 1
    return timesteps_for(timesteps, get_sampler(sampler).steps_for(available, steps), spacing, start_step)


def run_sampler(loaded: LoadedModel, noise: Tensor, sampler: str = DEFAULT_SAMPLER, steps: int | None = None,
                eta: float = 0.0, spacing: str = "uniform", callback: Callback | None = None,
                generator: torch.Generator | None = None, progress: bool = False, clip: str | None = None,
                start_step: int | None = None) -> Tensor:
    """Denoise `noise` (x_T, or x at `start_step`) into images in [-1, 1] with the named sampler."""
    sequence = sampler_timesteps(sampler, steps, loaded.schedule.timesteps, spacing, start_step)
    return get_sampler(sampler).sample(loaded.denoiser(clip), noise, loaded.schedule, sequence, eta=eta, callback=callback,
                        generator=generator, progress=progress)


def batch_generator(seed: int, first_index: int, device: torch.device) -> torch.Generator:
    """The random stream for the batch starting at image `first_index`: fixed by the seed."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + first_index)


def autocast_for(device: torch.device, precision: str):
    """bf16/fp16 autocast when asked for (bf16 only on CPU); a no-op context otherwise."""
    if precision == "no" or (device.type == "cpu" and precision != "bf16"):
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def generate_images(loaded: LoadedModel, count: int, batch_size: int = 250, sampler: str = DEFAULT_SAMPLER,
                    steps: int | None = None, eta: float = 0.0, seed: int = 0, precision: str = "no",
                    spacing: str = "uniform", clip: str | None = None) -> Iterator[tuple[int, Tensor]]:
    """Yield (index of the batch's first image, uint8 images (B, C, H, W) on the CPU) until
    `count` images are made; each batch's noise is seeded by (seed, first index)."""
    if count <= 0:
        raise ConfigError(f"{{option}} must be positive; got {count}", option="num_images")
    if batch_size <= 0:
        raise ConfigError(f"{{option}} must be positive; got {batch_size}", option="batch_size")
    device = loaded.device
    for first in range(0, count, batch_size):
        size = min(batch_size, count - first)
        generator = batch_generator(seed, first, device)
        noise = torch.randn(size, *loaded.image_shape(), device=device, generator=generator)
        with torch.inference_mode(), autocast_for(device, precision):
            images = run_sampler(loaded, noise, sampler, steps, eta, spacing, generator=generator, clip=clip)
        check_finite(images)  # NaN weights or a bad option: a message, not black images
        yield first, to_uint8(images)
