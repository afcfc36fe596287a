"""Respacing: the diffusion process restricted to a subsequence of its timesteps
(Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", sec. 4; their
code's `respace.py`), so that DDPM's ancestral sampler can run in fewer steps.

For kept timesteps t_1 < ... < t_S, alpha_bar is unchanged at the kept steps and the
respaced betas are beta'_i = 1 - alpha_bar(t_i) / alpha_bar(t_{i-1}) (alpha_bar(t_0) = 1).
The respaced schedule is an ordinary `DiffusionSchedule` over S steps: its index i is the
kept timestep t_{i+1}, so its posterior q(x_{t_{i-1}} | x_{t_i}, x_0) is DDPM's (eqs. 6-7)
between two kept steps, with variance beta'_i (1 - alpha_bar(t_{i-1})) / (1 - alpha_bar(t_i))."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from difflab.diffusion.process import DiffusionSchedule


def respaced_betas(betas: Tensor, kept: Sequence[int]) -> Tensor:
    """The betas (float64) of the process that visits only the timesteps `kept` (any order).

    Where a kept step follows its predecessor directly (t_i = t_{i-1} + 1, or t_1 = 0), the
    closed form is exactly beta_{t_i}, and that value is kept as it is: respacing onto every
    timestep returns the betas unchanged, bit for bit."""
    betas = betas.to(torch.float64)
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    index = torch.tensor(sorted(int(t) for t in kept), dtype=torch.long, device=betas.device)
    previous = torch.cat([index.new_tensor([-1]), index[:-1]])
    previous_alpha_bar = torch.where(previous >= 0, alpha_bar[previous.clamp(min=0)], alpha_bar.new_tensor(1.0))
    return torch.where(index - previous == 1, betas[index], 1 - alpha_bar[index] / previous_alpha_bar)


def respace(schedule: DiffusionSchedule, kept: Sequence[int]) -> DiffusionSchedule:
    """`schedule` restricted to the timesteps `kept`: index i of the result is the i-th smallest
    kept timestep. Keeping 0, 1, ..., k leaves the process as it is (its first k + 1 steps), and
    then `schedule` itself is returned, so its indices are the timesteps themselves."""
    ascending = sorted(int(t) for t in kept)
    if ascending == list(range(len(ascending))):
        return schedule
    return DiffusionSchedule(respaced_betas(schedule.float64["betas"], ascending), schedule.device,
                             schedule.conditioning)
