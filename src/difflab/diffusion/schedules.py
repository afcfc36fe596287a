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


KERAS_MAX_SIGNAL_RATE, KERAS_MIN_SIGNAL_RATE = 0.95, 0.02


def keras_cosine_rates(times: torch.Tensor, max_signal_rate: float = KERAS_MAX_SIGNAL_RATE,
                       min_signal_rate: float = KERAS_MIN_SIGNAL_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """The Keras DDIM lab's continuous-time schedule (its `diffusion_schedule`): at diffusion time
    t in [0, 1], signal rate cos(a) and noise rate sin(a) of the angle
    a = acos(max_signal_rate) + t (acos(min_signal_rate) - acos(max_signal_rate)).
    Returns (signal_rates, noise_rates); their squares sum to 1."""
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    angles = start + times.to(torch.float64) * (end - start)
    return torch.cos(angles), torch.sin(angles)


def keras_cosine_betas(timesteps: int) -> torch.Tensor:
    """The Keras lab's continuous schedule on a grid of T diffusion times: timestep i (0-based) is
    time (i + 1) / T, so the last is t = 1 (signal rate 0.02) and the first 1 / T. Its betas make
    alpha_bar_i = signal_rate((i + 1) / T)^2 exactly. Unlike the discrete schedules, alpha_bar
    does not start at 1: even the least noisy step keeps a noise rate of sin(acos(0.95)) = 0.31,
    as in the lab. With --spacing trailing, S sampler steps visit the lab's times 1, 1 - 1/S, ...,
    1/S whenever S divides T."""
    signal_rates, _ = keras_cosine_rates(torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps)
    alpha_bar = signal_rates**2
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return 1 - alpha_bar / previous


BETA_SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
    "keras-cosine": keras_cosine_betas,
}

# How the network is told where in the process it is, per schedule: "timestep" (t rescaled to
# 0-1000, as DDPM) or "noise_level" (1000 x the noise variance 1 - alpha_bar, as the Keras lab
# feeds the noise variance). Noise-level conditioning also survives respacing unchanged.
SCHEDULE_CONDITIONING: dict[str, str] = {"keras-cosine": "noise_level"}


def conditioning_of(name: str) -> str:
    return SCHEDULE_CONDITIONING.get(name, "timestep")


def make_beta_schedule(name: str, timesteps: int) -> torch.Tensor:
    """The named schedule's betas (float64, shape (T,)); ConfigError naming the option otherwise."""
    if name not in BETA_SCHEDULES:
        raise ConfigError(f"{OPTION} must be one of {', '.join(BETA_SCHEDULES)}; got {name!r}", option="beta_schedule")
    if not isinstance(timesteps, int) or timesteps < 2:
        raise ConfigError(f"{OPTION} must be an integer >= 2; got {timesteps!r}", option="timesteps")
    return BETA_SCHEDULES[name](timesteps)
