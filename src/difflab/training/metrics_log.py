"""The run's metrics log (one JSON object per line) and its loss-curve plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records to metrics.jsonl; on resume, records past the resumed step are dropped
    so the log matches the weights."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_loss_curve(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss against step (raw and smoothed) as a PNG; None when there is nothing to plot."""
    points = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if len(points) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = zip(*points)
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=120)
    window = len(losses) // 20  # smooth only where there are enough points to smooth
    axes.plot(steps, losses, alpha=0.35 if window > 1 else 1.0, label="loss (mean per log interval)")
    if window > 1:
        smoothed = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                    for i in range(len(losses))]
        axes.plot(steps, smoothed, label=f"moving average of {window}")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
