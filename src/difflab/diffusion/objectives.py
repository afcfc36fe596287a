"""What the network predicts, and conversions between the three parameterisations.

The network may predict the noise (Ho et al. 2020), the clean image x_0, or the
velocity v = signal_rate * noise - noise_rate * x_0 (Salimans & Ho 2022,
progressive distillation, sec. 4). Each is an invertible function of the other
given x_t, so every sampler can work from (pred_noise, pred_x0).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from difflab.errors import OPTION, ConfigError

OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")
CLIPPING = ("static", "dynamic", "none")


class Predictions(NamedTuple):
    pred_noise: Tensor
    pred_x0: Tensor


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ConfigError(f"{OPTION} must be one of {', '.join(OBJECTIVES)}; got {objective!r}", option="objective")
    return objective


def x0_from_noise(x_t: Tensor, pred_noise: Tensor, signal_rates: Tensor, noise_rates: Tensor) -> Tensor:
    return (x_t - noise_rates * pred_noise) / signal_rates


def noise_from_x0(x_t: Tensor, pred_x0: Tensor, signal_rates: Tensor, noise_rates: Tensor) -> Tensor:
    return (x_t - signal_rates * pred_x0) / noise_rates


def velocity(x0: Tensor, noise: Tensor, signal_rates: Tensor, noise_rates: Tensor) -> Tensor:
    """v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x_0 (the training target of pred_v)."""
    return signal_rates * noise - noise_rates * x0


def predictions_from_output(objective: str, output: Tensor, x_t: Tensor,
                            signal_rates: Tensor, noise_rates: Tensor) -> Predictions:
    """Turn the raw network output into (pred_noise, pred_x0) for the given objective."""
    if objective == "pred_noise":
        return Predictions(output, x0_from_noise(x_t, output, signal_rates, noise_rates))
    if objective == "pred_x0":
        return Predictions(noise_from_x0(x_t, output, signal_rates, noise_rates), output)
    if objective == "pred_v":
        # signal^2 + noise^2 = 1, so x_0 and noise are a rotation of (x_t, v).
        pred_x0 = signal_rates * x_t - noise_rates * output
        pred_noise = noise_rates * x_t + signal_rates * output
        return Predictions(pred_noise, pred_x0)
    raise ConfigError(f"{OPTION} must be one of {', '.join(OBJECTIVES)}; got {objective!r}", option="objective")


def training_target(objective: str, x0: Tensor, noise: Tensor, signal_rates: Tensor, noise_rates: Tensor) -> Tensor:
    """What the network is regressed onto for the given objective."""
    if objective == "pred_noise":
        return noise
    if objective == "pred_x0":
        return x0
    return velocity(x0, noise, signal_rates, noise_rates)


def clip_x0(pred_x0: Tensor, mode: str, percentile: float = 0.995) -> Tensor:
    """Keep the predicted clean image in the data range [-1, 1].

    `static` clamps; `dynamic` is Imagen's dynamic thresholding (Saharia et al. 2022,
    sec. 2.3): per sample, s = max(1, percentile of |x_0|), then clamp to [-s, s] and
    divide by s, which avoids the saturated colours that clamping produces."""
    if mode == "none":
        return pred_x0
    if mode == "static":
        return pred_x0.clamp(-1.0, 1.0)
    if mode == "dynamic":
        flat = pred_x0.detach().abs().flatten(1).float()
        s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(pred_x0.dtype)
        s = s.reshape(-1, *([1] * (pred_x0.ndim - 1)))
        return pred_x0.clamp(-s, s) / s
    raise ConfigError(f"{OPTION} must be one of {', '.join(CLIPPING)}; got {mode!r}", option="clip")
