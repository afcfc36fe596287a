"""DDPM ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2)."""
from __future__ import annotations

import torch
from torch import Tensor

from difflab.diffusion.denoiser import Denoiser, reverse_step
from difflab.diffusion.process import DiffusionSchedule
from difflab.samplers.common import Callback, check_start_step, report, step_bar


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x: Tensor, schedule: DiffusionSchedule, *,
                callback: Callback | None = None, generator: torch.Generator | None = None,
                progress: bool = False, start_step: int | None = None) -> Tensor:
    """Run the reverse Markov chain over all T steps, from x = x_T ~ N(0, I) to x_0.

    Each step samples q(x_{t-1} | x_t, x_0 = pred_x0) with the "fixed small" variance
    (the posterior variance beta-tilde_t), one network evaluation per step.
    `start_step` (default T - 1): x is a noisy image at that timestep (e.g. from q_sample),
    and the chain runs start_step, ..., 0 only, as image editing and fusion need."""
    batch = x.shape[0]
    first = check_start_step(start_step, schedule.timesteps)
    for i, step in enumerate(step_bar(range(first, -1, -1), progress, "DDPM")):
        t = torch.full((batch,), step, device=x.device, dtype=torch.long)
        pred_noise, pred_x0 = denoiser(x, t)
        report(callback, i, step, x, pred_x0)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        x = reverse_step(schedule, pred_x0, x, t, noise)
    return x
