"""The learning rate at each step: linear warm-up, then constant or decaying to zero at the end
of the training budget.

A short run gains most from the decay: the last steps average out the gradient noise that a
constant rate keeps injecting (the same reason EMA helps), so a run with a known budget should
spend it. The budget is `--steps`, or `--max-minutes` of training time when that comes first;
for a time budget the decay follows the clock of this invocation (as --max-minutes does), so a
run stopped by time is not bit-for-bit repeatable, while a step budget is.
"""
from __future__ import annotations

import math

from difflab.config import TrainConfig


def budget_progress(config: TrainConfig, step: int, run_seconds: float) -> float:
    """Fraction of the training budget spent, in [0, 1]: the larger of steps and minutes."""
    by_steps = step / max(1, config.steps)
    by_time = run_seconds / (config.max_minutes * 60) if config.max_minutes > 0 else 0.0
    return min(1.0, max(by_steps, by_time))


def learning_rate(config: TrainConfig, step: int, run_seconds: float = 0.0) -> float:
    """--lr after a linear warm-up over --warmup-steps, times the --lr-decay factor."""
    warmup = min(1.0, (step + 1) / max(1, config.warmup_steps))
    progress = budget_progress(config, step, run_seconds)
    decay = {"none": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress))}
    return config.lr * warmup * decay[config.lr_decay]
