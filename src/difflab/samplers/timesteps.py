"""The timesteps a sampler visits: built here once, then handed to the sampler.

Every sampler takes its sequence of timesteps (k-diffusion's samplers take their sigmas the
same way) instead of deriving it: `timesteps_for(T, steps, spacing, start_step)` makes the
usual one, and any strictly decreasing sequence of timesteps of the model works (e.g.
diffusers' "trailing" spacing, tests/test_export.py)."""
from __future__ import annotations

from typing import Sequence

import torch

from difflab.errors import ConfigError

SPACINGS = ("uniform", "quadratic", "trailing")


def check_start_step(start_step: int | None, timesteps: int) -> int:
    """The timestep a sampler starts from: T - 1 (pure noise) unless the caller starts part-way."""
    if start_step is None:
        return timesteps - 1
    if not 0 <= start_step < timesteps:
        raise ConfigError(f"{{option}} must be between 0 and {timesteps - 1}; got {start_step}", option="start_step")
    return int(start_step)


def spaced_timesteps(timesteps: int, steps: int, spacing: str = "uniform") -> list[int]:
    """S = `steps` of the timesteps T-1, ..., 0, from T-1 down to 0 (DDIM paper, appendix D.2:
    uniform or quadratic spacing; quadratic spends more steps near the clean end), or "trailing"
    (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", table 2):
    T-1, T-1-T/S, ..., T/S-1, every T/S-th timestep counted from the noisy end, which on the Keras
    lab's schedule are its times 1, 1 - 1/S, ..., 1/S. S = T gives every timestep."""
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"{{option}} must be between 1 and the model's {{option:timesteps}} ({timesteps}); "
                          f"got {steps}", option="steps")
    if spacing not in SPACINGS:
        raise ConfigError(f"{{option}} must be one of {', '.join(SPACINGS)}; got {spacing!r}", option="spacing")
    if spacing == "trailing":
        return [round(timesteps - 1 - k * timesteps / steps) for k in range(steps)]
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


def timesteps_for(timesteps: int, steps: int | None = None, spacing: str = "uniform",
                  start_step: int | None = None) -> list[int]:
    """The timesteps to visit for a model of `timesteps` (T) steps: `steps` of them (default:
    all) spread by `spacing` over start_step, ..., 0 (start_step default T - 1, pure noise;
    a later start is for image editing and fusion, where x is a noisy image at that step)."""
    available = check_start_step(start_step, timesteps) + 1
    if steps is not None and available < timesteps and not 1 <= steps <= available:
        raise ConfigError(f"{{option}} must be between 1 and {available} (the timesteps {available - 1}, ..., 0 "
                          f"from the start step); got {steps}", option="steps")
    return spaced_timesteps(available, available if steps is None else steps, spacing)


def resolve_timesteps(model_timesteps: int, timesteps: Sequence[int] | None, steps: int | None,
                      spacing: str, start_step: int | None, default_steps: int | None) -> list[int]:
    """The samplers' keyword shorthand: `timesteps` when given (checked, and `steps` /
    `start_step` if given must agree with it), else `timesteps_for(T, steps or default_steps,
    spacing, start_step)`."""
    if timesteps is None:
        return timesteps_for(model_timesteps, default_steps if steps is None else steps, spacing, start_step)
    sequence = [int(t) for t in timesteps]
    check_timesteps(sequence, model_timesteps)
    if steps is not None and steps != len(sequence):
        raise ConfigError(f"{{option}} ({steps}) disagrees with the {len(sequence)} timesteps given", option="steps")
    if start_step is not None and start_step != sequence[0]:
        raise ConfigError(f"{{option}} ({start_step}) disagrees with the first timestep given ({sequence[0]})",
                          option="start_step")
    return sequence


def check_timesteps(sequence: Sequence[int], model_timesteps: int) -> None:
    """A sampler's timesteps: at least one, strictly decreasing, each a timestep of the model."""
    if not sequence:
        raise ConfigError("{option}: no timesteps to visit", option="timesteps")
    if any(not 0 <= t < model_timesteps for t in sequence):
        raise ConfigError(f"{{option}} must lie between 0 and {model_timesteps - 1}; got {list(sequence)}",
                          option="timesteps")
    if any(later >= earlier for earlier, later in zip(sequence, sequence[1:])):
        raise ConfigError(f"{{option}} must be strictly decreasing (noisiest first); got {list(sequence)}",
                          option="timesteps")
