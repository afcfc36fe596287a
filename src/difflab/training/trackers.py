"""Experiment trackers (`--logger none|tensorboard|wandb`) through accelerate's trackers.

metrics.jsonl stays the source of truth; a tracker receives a copy of the same scalars (loss,
learning rate, images/s, the monitor's FD/KID and near-copy rate) and the sample grids.
`check_logger` runs before any work, so a tracker that is not installed, or wandb on a machine
that cannot reach its server, is a message before training starts, not a traceback after it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from difflab.config import LOGGERS
from difflab.errors import ConfigError

LOGS_FOLDER = "logs"  # tensorboard --logdir RUN/logs


def check_logger(name: str) -> None:
    """ConfigError unless the tracker `name` can work here."""
    if name not in LOGGERS:
        raise ConfigError(f"{{option}} must be one of {', '.join(LOGGERS)}; got {name!r}", option="logger")
    if name == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("{option} tensorboard needs the tensorboard package: pip install 'difflab[tensorboard]' "
                          "(or choose none)", option="logger")
    if name == "wandb":
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("{option} wandb needs the wandb package: pip install 'difflab[wandb]' (or choose none)",
                              option="logger")
        mode = os.environ.get("WANDB_MODE", "").lower()
        if mode not in ("offline", "disabled", "dryrun") and not os.environ.get("WANDB_API_KEY") \
                and not (Path.home() / ".netrc").is_file():
            raise ConfigError("{option} wandb has no login here (no WANDB_API_KEY, no ~/.netrc): run `wandb login`, "
                              "or set WANDB_MODE=offline to log to files and `wandb sync` them later", option="logger")


def accelerator_arguments(name: str, run_dir: Path) -> dict[str, Any]:
    """The Accelerator(...) keyword arguments for the tracker."""
    if name == "none":
        return {}
    return {"log_with": name, "project_dir": str(Path(run_dir) / LOGS_FOLDER)}


class Trackers:
    """The run's trackers, or nothing: every method is a no-op for `--logger none`."""

    def __init__(self, accelerator: Any, name: str, run_name: str, options: dict[str, Any]) -> None:
        self.accelerator, self.name = accelerator, name
        if name != "none":
            flat = {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool))}
            accelerator.init_trackers(run_name, config=flat)

    def scalars(self, values: dict[str, Any], step: int) -> None:
        if self.name == "none":
            return
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self.accelerator.log(numbers, step=step)

    def grid(self, tag: str, grid: np.ndarray, step: int) -> None:
        """One image (H, W, C) uint8, e.g. the preview grid saved at a checkpoint."""
        if self.name == "none":
            return
        tracker = self.accelerator.get_tracker(self.name, unwrap=False)
        if self.name == "tensorboard":
            tracker.log_images({tag: grid[None]}, step=step, dataformats="NHWC")
        else:
            tracker.log_images({tag: [grid]}, step=step)

    def close(self) -> None:
        if self.name != "none":
            self.accelerator.end_training()
