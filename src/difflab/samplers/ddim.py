"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12).

Uses the network trained for DDPM unchanged: DDIM only changes the reverse process,
which is non-Markovian and so may visit any increasing subsequence of the T timesteps."""
from __future__ import annotations

import torch
from torch import Tensor

from difflab.diffusion.denoiser import Denoiser
from difflab.diffusion.process import DiffusionSchedule
from difflab.errors import ConfigError
from difflab.samplers.common import Callback, check_start_step, report, step_bar

SPACINGS = ("uniform", "quadratic")


def ddim_timesteps(timesteps: int, steps: int, spacing: str = "uniform") -> list[int]:
    """The S timesteps DDIM visits, from T-1 down to 0 (DDIM paper, appendix D.2: uniform
    or quadratic spacing; quadratic spends more steps near the clean end)."""
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"--steps must be between 1 and the model's --timesteps ({timesteps}); got {steps}")
    if spacing not in SPACINGS:
        raise ConfigError(f"--spacing must be one of {', '.join(SPACINGS)}; got {spacing!r}")
    fractions = torch.linspace(1, 0, steps, dtype=torch.float64)
    if spacing == "quadratic":
        fractions = fractions**2
    sequence = (fractions * (timesteps - 1)).round().long().tolist()
    # Rounding collides where steps are dense (near t = 0 for quadratic spacing): push
    # colliding steps upwards so the sequence is strictly decreasing and still ends at 0.
    for i in range(len(sequence) - 2, -1, -1):
        sequence[i] = max(sequence[i], sequence[i + 1] + 1)
    for i in range(1, len(sequence)):  # only binds when steps is close to T
        sequence[i] = min(sequence[i], sequence[i - 1] - 1)
    return sequence if steps > 1 else [timesteps - 1]


def ddim_sigma(alpha_bar: Tensor, alpha_bar_prev: Tensor, eta: float) -> Tensor:
    """DDIM eq. 16: sigma = eta * sqrt((1 - a_prev) / (1 - a)) * sqrt(1 - a / a_prev).
    eta = 1 gives DDPM's posterior variance; eta = 0 a deterministic map from x_T to x_0."""
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: Tensor, schedule: DiffusionSchedule, *, steps: int = 50,
                eta: float = 0.0, spacing: str = "uniform", callback: Callback | None = None,
                generator: torch.Generator | None = None, progress: bool = False,
                start_step: int | None = None) -> Tensor:
    """Generalised DDIM update over `steps` timesteps:
    x_prev = sqrt(a_prev) pred_x0 + sqrt(1 - a_prev - sigma^2) pred_noise + sigma z.

    `start_step` (default T - 1): x is a noisy image at that timestep, and the `steps`
    timesteps are spread over start_step, ..., 0 instead (at most start_step + 1 of them)."""
    if eta < 0:
        raise ConfigError(f"--eta must be >= 0; got {eta}")
    sequence = ddim_timesteps(check_start_step(start_step, schedule.timesteps) + 1, steps, spacing)
    batch = x.shape[0]
    for i, step in enumerate(step_bar(sequence, progress, f"DDIM-{steps}")):
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
def invert_ddim(denoiser: Denoiser, x0: Tensor, schedule: DiffusionSchedule, *, steps: int = 50,
                spacing: str = "uniform", callback: Callback | None = None, progress: bool = False) -> Tensor:
    """Deterministic DDIM inversion x_0 -> x_{T-1} (DDIM paper sec. 5.4): the eta = 0 update
    run forwards in time, each step reusing the noise estimate at the current timestep.
    Decoding the result with `sample_ddim(eta=0)` over the same steps approximately returns x0."""
    ascending = ddim_timesteps(schedule.timesteps, steps, spacing)[::-1]
    x, batch = x0, x0.shape[0]
    for i, (step, next_step) in enumerate(step_bar(list(zip(ascending, ascending[1:])), progress, "DDIM inversion")):
        t = torch.full((batch,), step, device=x.device, dtype=torch.long)
        pred_noise, pred_x0 = denoiser(x, t)
        report(callback, i, step, x, pred_x0)
        alpha_bar_next = schedule.alpha_bar[next_step]
        x = alpha_bar_next.sqrt() * pred_x0 + (1 - alpha_bar_next).sqrt() * pred_noise
    return x
