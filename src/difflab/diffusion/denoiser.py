"""`model_predictions`: wraps a network so that samplers see one function
(x_t, t) -> Predictions(pred_noise, pred_x0), whatever the network was trained to predict."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from difflab.diffusion.objectives import Predictions, clip_x0, noise_from_x0, predictions_from_output
from difflab.diffusion.process import DiffusionSchedule, model_time, q_posterior

Denoiser = Callable[[Tensor, Tensor], Predictions]
__all__ = ["Denoiser", "make_denoiser", "model_predictions", "model_time", "reverse_step"]


def model_predictions(model: nn.Module, schedule: DiffusionSchedule, objective: str,
                      x_t: Tensor, t: Tensor, clip: str = "static") -> Predictions:
    """The network's estimate of the noise in x_t and of the clean image x_0.

    With clipping, x_0 is clipped to the data range and the noise is re-derived from the
    clipped x_0, so the pair stays consistent with x_t (as in the DDIM and
    denoising-diffusion-pytorch code)."""
    signal_rates = schedule.at("signal_rates", t, x_t)
    noise_rates = schedule.at("noise_rates", t, x_t)
    output = model(x_t, schedule.network_time(t)).to(x_t.dtype)
    pred_noise, pred_x0 = predictions_from_output(objective, output, x_t, signal_rates, noise_rates)
    if clip != "none":
        pred_x0 = clip_x0(pred_x0, clip)
        pred_noise = noise_from_x0(x_t, pred_x0, signal_rates, noise_rates)
    return Predictions(pred_noise, pred_x0)


def make_denoiser(model: nn.Module, schedule: DiffusionSchedule, objective: str, clip: str = "static") -> Denoiser:
    """Bind a network to a schedule and objective, giving the samplers' one signature."""
    def denoise(x_t: Tensor, t: Tensor) -> Predictions:
        return model_predictions(model, schedule, objective, x_t, t, clip)
    return denoise


@torch.no_grad()
def reverse_step(schedule: DiffusionSchedule, pred_x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """One DDPM ancestral step x_t -> x_{t-1} (Ho et al. 2020, Algorithm 2): sample the
    posterior q(x_{t-1} | x_t, x_0 = pred_x0); no noise is added at the last step (t = 0)."""
    mean, log_variance = q_posterior(schedule, pred_x0, x_t, t)
    nonzero = (t > 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
    return mean + nonzero * torch.exp(0.5 * log_variance) * noise
