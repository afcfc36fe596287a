"""The Gaussian diffusion process of DDPM (Ho et al. 2020): tables derived from the
betas, and the textbook pieces the course homework asks students to explain.

Notation follows the paper: alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s.
With the Keras DDIM example's names, signal_rates = sqrt(alpha_bar) and
noise_rates = sqrt(1 - alpha_bar), so x_t = signal_rates * x_0 + noise_rates * noise.
"""
from __future__ import annotations

import torch
from torch import Tensor


CONDITIONINGS = ("timestep", "noise_level")  # what the network sees: difflab.diffusion.schedules.SCHEDULE_CONDITIONING


def model_time(t: Tensor, timesteps: int) -> Tensor:
    """The network sees t rescaled to [0, 1000), so its time embedding means the same for any T."""
    return t.float() * (1000.0 / timesteps)


def _broadcast(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values (B,) reshaped to (B, 1, 1, 1) to scale image batches."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


class DiffusionSchedule:
    """All per-timestep constants of the forward and reverse processes.

    Tables are computed in float64 and kept in float32 on `device`; index them with
    integer timesteps t in [0, T). Index 0 is the first noising step (x_0 -> x_1 in
    the paper's 1-based notation).
    """

    def __init__(self, betas: Tensor, device: torch.device | str = "cpu", conditioning: str = "timestep"):
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {', '.join(CONDITIONINGS)}; got {conditioning!r}")
        self.conditioning = conditioning
        betas = betas.to(torch.float64)
        self.timesteps = int(betas.shape[0])
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, posterior_variance), DDPM eqs. 6-7.
        posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        tables = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "signal_rates": alpha_bar.sqrt(),
            "noise_rates": (1.0 - alpha_bar).sqrt(),
            "posterior_variance": posterior_variance,
            # The variance is 0 at t=0; clip the log as the DDPM code does. A one-step schedule (a
            # respacing onto one timestep) has no t=1 to clip to: its t=0 adds no noise, so any
            # finite value serves; beta_0 keeps the table finite.
            "posterior_log_variance": torch.log(torch.cat([posterior_variance[1:2] if len(betas) > 1 else betas[:1],
                                                           posterior_variance[1:]])),
            "posterior_coef_x0": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
            "posterior_coef_xt": (1.0 - alpha_bar_prev) * alphas.sqrt() / (1.0 - alpha_bar),
            "snr": alpha_bar / (1.0 - alpha_bar),
        }
        self.float64 = tables
        self.device = torch.device(device)
        for name, table in tables.items():
            setattr(self, name, table.to(device=self.device, dtype=torch.float32))

    def to(self, device: torch.device | str) -> "DiffusionSchedule":
        return DiffusionSchedule(self.float64["betas"], device, self.conditioning)

    def network_time(self, t: Tensor) -> Tensor:
        """What the network is conditioned on at timesteps t (B,), on a 0-1000 scale: t * 1000 / T
        for "timestep" conditioning (so the embedding means the same for any T), or 1000 times
        the noise variance 1 - alpha_bar_t for "noise_level" conditioning (the Keras lab's)."""
        if self.conditioning == "noise_level":
            return 1000.0 * (1.0 - self.alpha_bar[t].float())
        return model_time(t, self.timesteps)

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table `name` gathered at timesteps t (B,), shaped to broadcast against `like`."""
        return _broadcast(getattr(self, name)[t], like).to(like.dtype)


def q_sample(schedule: DiffusionSchedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Forward noising in closed form: x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    (DDPM eq. 4), written as x_t = signal_rate * x_0 + noise_rate * noise."""
    signal_rates = schedule.at("signal_rates", t, x0)
    noise_rates = schedule.at("noise_rates", t, x0)
    return signal_rates * x0 + noise_rates * noise


def q_posterior(schedule: DiffusionSchedule, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and log-variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7), the target each
    reverse step imitates: the model's guess of x_0 is plugged in for x_0."""
    mean = schedule.at("posterior_coef_x0", t, x_t) * x0 + schedule.at("posterior_coef_xt", t, x_t) * x_t
    log_variance = schedule.at("posterior_log_variance", t, x_t)
    return mean, log_variance
