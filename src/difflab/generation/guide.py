"""Autoguidance for sampling: load the guide checkpoint and wrap the model with it
(the math is in diffusion/guidance.py)."""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import torch

from difflab.diffusion.guidance import AutoGuidedNetwork
from difflab.errors import OPTION, ConfigError
from difflab.generation.model_io import LoadedModel, load_model
from difflab.training.checkpoint import checkpoint_step, list_checkpoints

# `--guide auto` takes the run's checkpoint nearest this fraction of the sampled model's steps
# (`--guide-fraction`). Measured on MNIST models, DDIM-50 eta 1, 256 samples, weight 3.5
# (benchmarks/RESULTS.md): the best fraction was 0.38 for the 32-channel CPU recipe (4 seeds),
# 0.27 for the 24-channel one (8 seeds), 0.17-0.2 for one H200 minute at batch 512 (5 seeds) and for
# session 5's 16/32/64 CPU recipe (4 seeds).
AUTO_GUIDE_FRACTION = 0.4
DEFAULT_GUIDANCE = 2.5
# No guidance at timesteps below this share of T (`--guide-min-t`; diffusion/guidance.py says why).
# On three 8-minute CPU MNIST models (weight 3.5), guiding at every step gave 69.5 / 70.7 / 71.5%
# confident digits; not below t = 100 of 1000, 73.8 / 74.6 / 75.4%; not below 200, 74.2 / 74.6 / 75.4%.
GUIDE_MIN_T_SHARE = 0.1


def default_guide_min_t(timesteps: int) -> int:
    return round(GUIDE_MIN_T_SHARE * timesteps)


def check_guide_min_t(min_t: int, timesteps: int | None = None) -> None:
    if min_t < 0 or (timesteps is not None and min_t >= timesteps):
        known = f" ({timesteps})" if timesteps is not None else ""
        raise ConfigError(f"{OPTION} must be >= 0 and below the model's {{option:timesteps}}{known} "
                          f"(0 = guide at every step); got {min_t}", option="guide_min_t")


def check_guide_fraction(fraction: float) -> None:
    if not 0 < fraction < 1:
        raise ConfigError(f"{OPTION} must lie between 0 and 1 (a share of the model's steps); got {fraction}",
                          option="guide_fraction")


def resolve_guide(main: LoadedModel, guide: str, fraction: float = AUTO_GUIDE_FRACTION) -> Path:
    """The guide's checkpoint file: `guide` itself, or for "auto" the earlier checkpoint of the
    main model's run nearest `fraction` of its steps."""
    if guide != "auto":
        return Path(guide)
    earlier = [p for p in list_checkpoints(main.checkpoint.parent) if 0 <= checkpoint_step(p) < main.step]
    if not earlier:
        raise ConfigError(f"{OPTION} auto needs an earlier checkpoint beside {main.checkpoint}, and there is none; "
                          "train with a {option:save_every} well below the run's steps and a {option:keep_checkpoints} "
                          "that keeps the early ones, or give {option} a checkpoint file", option="guide")
    target = fraction * main.step
    chosen = min(earlier, key=lambda p: abs(checkpoint_step(p) - target))
    if abs(checkpoint_step(chosen) - target) > 0.15 * main.step:
        warnings.warn(f"autoguidance: the nearest kept checkpoint to step {target:.0f} is {chosen.name}; the guide "
                      f"works best near {fraction:.0%} of the steps (keep more checkpoints when training: "
                      "keep_checkpoints)", stacklevel=2)
    return chosen


def with_autoguidance(main: LoadedModel, guide: str, weight: float, weights: str = "ema",
                      fraction: float = AUTO_GUIDE_FRACTION, min_t: int | None = None) -> LoadedModel:
    """`main` sampling as guide + weight x (main - guide) (Karras et al. 2024); `fraction` says
    which earlier checkpoint `guide="auto"` takes; below timestep `min_t` (default T/10) the
    model runs unguided."""
    if weight <= 0:
        raise ConfigError(f"{OPTION} must be positive (1 = no guidance); got {weight}", option="guidance")
    check_guide_fraction(fraction)
    timesteps = main.config.timesteps
    min_t = default_guide_min_t(timesteps) if min_t is None else min_t
    check_guide_min_t(min_t, timesteps)
    guide_model = load_model(resolve_guide(main, guide, fraction), device=main.device, weights=weights)
    for what, ours, theirs in [("image shape", main.image_shape(), guide_model.image_shape()),
                               ("objective", main.config.objective, guide_model.config.objective),
                               ("beta schedule", main.config.beta_schedule, guide_model.config.beta_schedule),
                               ("timesteps", main.config.timesteps, guide_model.config.timesteps)]:
        if ours != theirs:
            raise ConfigError(f"{OPTION} {guide_model.checkpoint} does not match the model: {what} {theirs} "
                              f"against {ours}; the guide must be a checkpoint of the same kind of model",
                              option="guide")
    min_time = float(main.schedule.network_time(torch.tensor([min_t], device=main.schedule.device)))  # as the networks see it
    network = AutoGuidedNetwork(main.network, guide_model.network, weight, min_time).eval()
    return replace(main, network=network, guidance={"guide": str(guide_model.checkpoint), "guide_step": guide_model.step,
                                                    "weight": weight, "min_t": min_t})
