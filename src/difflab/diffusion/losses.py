"""The training loss (DDPM Algorithm 1), with optional min-SNR-gamma weighting."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.diffusion.objectives import check_objective, training_target
from difflab.diffusion.process import DiffusionSchedule, q_sample
from difflab.errors import OPTION, ConfigError

LOSS_WEIGHTINGS = ("none", "min_snr")
LOSS_NORMS = {"l2": lambda difference: difference.pow(2), "l1": lambda difference: difference.abs()}


def min_snr_weight(snr: Tensor, objective: str, gamma: float) -> Tensor:
    """Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting": weight the
    x_0-space loss by min(SNR, gamma), expressed in the objective's own space."""
    clipped = snr.clamp(max=gamma)
    if objective == "pred_noise":
        return clipped / snr
    if objective == "pred_v":
        return clipped / (snr + 1)
    return clipped


class DiffusionLoss:
    """Mean squared (or, with norm "l1", absolute) error between the network output and the
    objective's target at a uniformly drawn timestep: E_{t, x_0, noise} w(t) ||target - model(x_t, t)||^2."""

    def __init__(self, schedule: DiffusionSchedule, objective: str = "pred_noise",
                 weighting: str = "none", min_snr_gamma: float = 5.0, norm: str = "l2"):
        if weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"{OPTION} must be one of {', '.join(LOSS_WEIGHTINGS)}; got {weighting!r}",
                              option="loss_weighting")
        if min_snr_gamma <= 0:
            raise ConfigError(f"{OPTION} must be positive; got {min_snr_gamma}", option="min_snr_gamma")
        self.schedule, self.objective = schedule, check_objective(objective)
        if norm not in LOSS_NORMS:
            raise ConfigError(f"{OPTION} must be one of {', '.join(LOSS_NORMS)}; got {norm!r}", option="loss_norm")
        self.weighting, self.min_snr_gamma, self.norm = weighting, min_snr_gamma, LOSS_NORMS[norm]

    def __call__(self, model: nn.Module, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch = x0.shape[0]
        t = torch.randint(0, self.schedule.timesteps, (batch,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = q_sample(self.schedule, x0, t, noise)
        signal_rates = self.schedule.at("signal_rates", t, x0)
        noise_rates = self.schedule.at("noise_rates", t, x0)
        target = training_target(self.objective, x0, noise, signal_rates, noise_rates)
        output = model(x_t, self.schedule.network_time(t))
        per_sample = self.norm(output.float() - target.float()).mean(dim=tuple(range(1, x0.ndim)))
        if self.weighting == "min_snr":
            per_sample = per_sample * min_snr_weight(self.schedule.snr[t], self.objective, self.min_snr_gamma)
        return per_sample.mean()
