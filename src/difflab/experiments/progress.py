"""Progressive generation: the same samples seen at several timesteps while they are denoised.

The snapshots are taken by the samplers' callback during one ordinary sampling run, so
the figure shows exactly what `difflab sample` computes: there is no second copy of the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from difflab.errors import ConfigError
from difflab.generation import LoadedModel, autocast_for, run_sampler
from difflab.generation.generate import sampler_timesteps
from difflab.viz.figures import labelled_grid
from difflab.viz.grid import to_uint8

FINAL_LABEL = "x0"


def visited_timesteps(timesteps: int, sampler: str, steps: int | None = None, spacing: str = "uniform") -> list[int]:
    """The timesteps the sampler evaluates the network at, in order (T-1 first)."""
    return sampler_timesteps(sampler, steps, timesteps, spacing)


def evenly_spaced_frames(num_steps: int, frames: int) -> list[int]:
    """Indices of the `frames - 1` sampler steps to snapshot, evenly spread from the first
    (pure noise) onwards; the finished image fills the last column."""
    if not 2 <= frames <= num_steps + 1:
        raise ConfigError(f"{{option}} must be between 2 and the number of sampler steps + 1 ({num_steps + 1}); "
                          f"got {frames}", option="frames")
    return [round(k * num_steps / (frames - 1)) for k in range(frames - 1)]


def frames_at_timesteps(visited: list[int], requested: list[int]) -> list[int]:
    """For each requested t, the first sampler step at or below it (with fewer steps than T, most timesteps are skipped)."""
    indices = []
    for t in requested:
        if not 0 <= t <= visited[0]:
            raise ConfigError(f"{{option}}: timesteps must be between 0 and {visited[0]}; got {t}", option="at")
        indices.append(next(i for i, step in enumerate(visited) if step <= t))
    return sorted(set(indices))


@dataclass
class Progress:
    """uint8 snapshots (samples, columns, C, H, W); the last column is the finished image."""

    labels: list[str]
    noisy: Tensor  # x_t entering each chosen step
    predicted: Tensor  # the network's guess of x_0 at that step

    @property
    def final(self) -> Tensor:
        return self.noisy[:, -1]


def record_progress(loaded: LoadedModel, noise: Tensor, frame_indices: list[int], sampler: str = "ddim",
                    steps: int | None = None, eta: float = 0.0, spacing: str = "uniform",
                    generator: torch.Generator | None = None, clip: str | None = None,
                    precision: str = "no", progress: bool = False) -> Progress:
    """Sample from `noise` once, keeping x_t and pred_x0 at the sampler steps `frame_indices`."""
    wanted = set(frame_indices)
    snapshots: dict[int, tuple[int, Tensor, Tensor]] = {}

    def keep_snapshot(state: dict[str, Any]) -> None:
        if state["i"] in wanted:
            snapshots[state["i"]] = (state["t"], to_uint8(state["x"]), to_uint8(state["pred_x0"]))

    with torch.inference_mode(), autocast_for(loaded.device, precision):
        final = to_uint8(run_sampler(loaded, noise, sampler, steps, eta, spacing, callback=keep_snapshot,
                                     generator=generator, progress=progress, clip=clip))
    ordered = [snapshots[i] for i in sorted(snapshots)]
    labels = [f"t={t}" for t, _, _ in ordered] + [FINAL_LABEL]
    noisy = torch.stack([x for _, x, _ in ordered] + [final], dim=1)
    predicted = torch.stack([x0 for _, _, x0 in ordered] + [final], dim=1)
    return Progress(labels, noisy, predicted)


def progress_figure(progress: Progress, show_x0: bool = False, scale: int = 1) -> Image.Image:
    """One row per sample (columns labelled t); with `show_x0`, the predicted x0 row under each."""
    if not show_x0:
        return labelled_grid(progress.noisy, progress.labels, scale=scale)
    rows = torch.stack([progress.noisy, progress.predicted], dim=1).flatten(0, 1)
    row_labels = ["x_t", "pred x0"] * progress.noisy.shape[0]
    return labelled_grid(rows, progress.labels, row_labels, scale=scale)


def progress_animation(progress: Progress, show_x0: bool = False, scale: int = 1) -> list[Image.Image]:
    """GIF frames, one per column: the samples stacked vertically (beside their x0 guesses)."""
    frames = []
    for column, label in enumerate(progress.labels):
        cells = progress.noisy[:, column:column + 1]
        labels = [label]
        if show_x0:
            cells = torch.cat([cells, progress.predicted[:, column:column + 1]], dim=1)
            labels.append("pred x0")
        frames.append(labelled_grid(cells, labels, scale=scale))
    return frames
