"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12).

Uses the network trained for DDPM unchanged: DDIM only changes the reverse process,
which is non-Markovian and so may visit any decreasing subsequence of the T timesteps."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from difflab.diffusion.denoiser import Denoiser
from difflab.diffusion.process import DiffusionSchedule
from difflab.errors import ConfigError
from difflab.samplers.common import Callback, report, step_bar
from difflab.samplers.timesteps import SPACINGS, resolve_timesteps, spaced_timesteps

DEFAULT_STEPS = 50
ddim_timesteps = spaced_timesteps  # the name this function had when only DDIM skipped timesteps

__all__ = ["DEFAULT_STEPS", "SPACINGS", "ddim_sigma", "ddim_timesteps", "invert_ddim", "sample_ddim"]


def ddim_sigma(alpha_bar: Tensor, alpha_bar_prev: Tensor, eta: float) -> Tensor:
    """DDIM eq. 16: sigma = eta * sqrt((1 - a_prev) / (1 - a)) * sqrt(1 - a / a_prev).
    eta = 1 gives DDPM's posterior variance; eta = 0 a deterministic map from x_T to x_0."""
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, schedule: DiffusionSchedule, timesteps: Sequence[int] | None = None,
                *, eta: float = 0.0, callback: Callback | None = None, generator: torch.Generator | None = None,
                progress: bool = False, steps: int | None = None, spacing: str = "uniform",
                start_step: int | None = None) -> Tensor:
    """Generalised DDIM update over `timesteps` (noisiest first):
    x_prev = sqrt(a_prev) pred_x0 + sqrt(1 - a_prev - sigma^2) pred_noise + sigma z.

    Without `timesteps`, the shorthand `steps` (default 50), `spacing` and `start_step`
    (default T - 1; x is then a noisy image at that timestep) pick them (samplers/timesteps.py)."""
    if eta < 0:
        raise ConfigError(f"{{option}} must be >= 0; got {eta}", option="eta")
    sequence = resolve_timesteps(schedule.timesteps, timesteps, steps, spacing, start_step, DEFAULT_STEPS)
    batch = x.shape[0]
    for i, step in enumerate(step_bar(sequence, progress, f"DDIM-{len(sequence)}")):
        t = torch.full((batch,), step, device=x.device, dtype=torch.long)
        pred_noise, pred_x0 = denoiser(x, t)
        report(callback, i, step, x, pred_x0)
        alpha_bar = schedule.alpha_bar[step]
        alpha_bar_prev = schedule.alpha_bar[sequence[i + 1]] if i + 1 < len(sequence) else alpha_bar.new_tensor(1.0)
        sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta)
        x = alpha_bar_prev.sqrt() * pred_x0 + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * pred_noise
        if eta > 0 and i + 1 < len(sequence):
            x = x + sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return x


@torch.no_grad()
def invert_ddim(denoiser: Denoiser, x0: Tensor, schedule: DiffusionSchedule, timesteps: Sequence[int] | None = None,
                *, callback: Callback | None = None, progress: bool = False, steps: int | None = None,
                spacing: str = "uniform") -> Tensor:
    """Deterministic DDIM inversion x_0 -> x_{T-1} (DDIM paper sec. 5.4): the eta = 0 update
    run forwards in time over `timesteps` (given noisiest first, as to the samplers; default
    `steps` = 50 spread by `spacing`), each step reusing the noise estimate at the current
    timestep. Decoding the result with `sample_ddim(eta=0)` over the same timesteps
    approximately returns x0."""
    ascending = resolve_timesteps(schedule.timesteps, timesteps, steps, spacing, None, DEFAULT_STEPS)[::-1]
    x, batch = x0, x0.shape[0]
    for i, (step, next_step) in enumerate(step_bar(list(zip(ascending, ascending[1:])), progress, "DDIM inversion")):
        t = torch.full((batch,), step, device=x.device, dtype=torch.long)
        pred_noise, pred_x0 = denoiser(x, t)
        report(callback, i, step, x, pred_x0)
        alpha_bar_next = schedule.alpha_bar[next_step]
        x = alpha_bar_next.sqrt() * pred_x0 + (1 - alpha_bar_next).sqrt() * pred_noise
    return x
