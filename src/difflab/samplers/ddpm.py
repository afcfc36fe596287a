"""DDPM ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2),
over all T timesteps or, respaced (Nichol & Dhariwal 2021, samplers/respace.py), over any
subsequence of them."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from difflab.diffusion.denoiser import Denoiser, reverse_step
from difflab.diffusion.process import DiffusionSchedule
from difflab.samplers.common import Callback, report, step_bar
from difflab.samplers.respace import respace
from difflab.samplers.timesteps import resolve_timesteps

DEFAULT_STEPS = None  # every timestep of the model


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: Tensor, schedule: DiffusionSchedule, timesteps: Sequence[int] | None = None,
                *, callback: Callback | None = None, generator: torch.Generator | None = None,
                progress: bool = False, steps: int | None = None, spacing: str = "uniform",
                start_step: int | None = None) -> Tensor:
    """Run the reverse Markov chain over `timesteps` (noisiest first), from x at timesteps[0]
    (x_T ~ N(0, I) for T - 1) to x_0.

    Each step samples q(x_prev | x_t, x_0 = pred_x0) with the "fixed small" variance (the
    posterior variance beta-tilde), one network evaluation per step; over a subsequence the
    posterior is that of the respaced process. Without `timesteps`, the shorthand
    `steps` (default: all), `spacing` and `start_step` (default T - 1; x is then a noisy image
    at that timestep, as image editing and fusion need) pick them (samplers/timesteps.py)."""
    sequence = resolve_timesteps(schedule.timesteps, timesteps, steps, spacing, start_step, DEFAULT_STEPS)
    respaced = respace(schedule, sequence)  # its index i is the i-th smallest timestep of the sequence
    batch, last = x.shape[0], len(sequence) - 1
    for i, step in enumerate(step_bar(sequence, progress, f"DDPM-{len(sequence)}")):
        t = torch.full((batch,), step, device=x.device, dtype=torch.long)
        pred_noise, pred_x0 = denoiser(x, t)
        report(callback, i, step, x, pred_x0)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        index = torch.full((batch,), last - i, device=x.device, dtype=torch.long)  # the step in `respaced`
        x = reverse_step(respaced, pred_x0, x, index, noise)
    return x
