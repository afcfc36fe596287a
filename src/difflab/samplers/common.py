"""What all samplers share: the callback hook and the optional progress bar."""
from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

from torch import Tensor
from tqdm.auto import tqdm

from difflab.errors import ConfigError

Callback = Callable[[dict[str, Any]], None]
T = TypeVar("T")


def report(callback: Callback | None, i: int, t: int, x: Tensor, pred_x0: Tensor) -> None:
    """Hand the callback the state entering step i: the noisy x at timestep t and the
    network's current guess of the clean image (k-diffusion's callback convention)."""
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "pred_x0": pred_x0})


def step_bar(steps: Iterable[T], progress: bool, label: str) -> Iterable[T]:
    return tqdm(steps, desc=label, leave=False, dynamic_ncols=True) if progress else steps


def check_start_step(start_step: int | None, timesteps: int) -> int:
    """The timestep a sampler starts from: T - 1 (pure noise) unless the caller starts part-way."""
    if start_step is None:
        return timesteps - 1
    if not 0 <= start_step < timesteps:
        raise ConfigError(f"--t (the start step) must be between 0 and {timesteps - 1}; got {start_step}")
    return int(start_step)
