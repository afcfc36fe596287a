"""Noise schedules: the betas of the forward process q(x_t | x_{t-1}).

Kept apart from the solvers (as in k-diffusion): a schedule is just a
float64 tensor of T betas; everything else is derived from it in
`process.DiffusionSchedule`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from difflab.errors import OPTION, ConfigError


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. 2020 (DDPM), linear in t. The endpoints are scaled by 1000/T, as in
    the DDPM code (and improved-diffusion), so any T gives the same overall noise level."""
    scale = 1000.0 / timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=torch.float64)


def _betas_from_alpha_bar(alpha_bar: Callable[[torch.Tensor], torch.Tensor], timesteps: int,
                          max_beta: float = 0.999) -> torch.Tensor:
    """Discretise a continuous alpha_bar(s), s in [0, 1], into T betas:
    beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T), clipped to avoid a singular last step."""
    s = torch.linspace(0, 1, timesteps + 1, dtype=torch.float64)
    values = alpha_bar(s)
    betas = 1 - values[1:] / values[:-1]
    return betas.clamp(0, max_beta)


def cosine_betas(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021 (Improved DDPM), eq. 17: alpha_bar(s) = f(s)/f(0) with
    f(s) = cos(((s + offset) / (1 + offset)) * pi/2)^2."""
    def alpha_bar(s: torch.Tensor) -> torch.Tensor:
        f = torch.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
        return f / f[0]
    return _betas_from_alpha_bar(alpha_bar, timesteps)


def sigmoid_betas(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Jabri et al. 2022 (RIN) / Chen 2023: alpha_bar follows a rescaled sigmoid, which
    spends fewer steps at the nearly-clean end than cosine; good for larger images."""
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))

    def alpha_bar(s: torch.Tensor) -> torch.Tensor:
        return (v_end - torch.sigmoid((s * (end - start) + start) / tau)) / (v_end - v_start)
    return _betas_from_alpha_bar(alpha_bar, timesteps)


BETA_SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}


def make_beta_schedule(name: str, timesteps: int) -> torch.Tensor:
    """The named schedule's betas (float64, shape (T,)); ConfigError naming the option otherwise."""
    if name not in BETA_SCHEDULES:
        raise ConfigError(f"{OPTION} must be one of {', '.join(BETA_SCHEDULES)}; got {name!r}", option="beta_schedule")
    if not isinstance(timesteps, int) or timesteps < 2:
        raise ConfigError(f"{OPTION} must be an integer >= 2; got {timesteps!r}", option="timesteps")
    return BETA_SCHEDULES[name](timesteps)
