"""What all samplers share: the callback hook and the optional progress bar."""
from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

from torch import Tensor
from tqdm.auto import tqdm

Callback = Callable[[dict[str, Any]], None]
T = TypeVar("T")


def report(callback: Callback | None, i: int, t: int, x: Tensor, pred_x0: Tensor) -> None:
    """Hand the callback the state entering step i: the noisy x at timestep t and the
    network's current guess of the clean image (k-diffusion's callback convention)."""
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "pred_x0": pred_x0})


def step_bar(steps: Iterable[T], progress: bool, label: str) -> Iterable[T]:
    return tqdm(steps, desc=label, leave=False, dynamic_ncols=True) if progress else steps

