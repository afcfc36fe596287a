"""The run's metrics log (one JSON object per line) and its loss-curve plot.

Crash safety: every record is appended with a single os.write of the whole line (O_APPEND)
followed by fsync, so a kill or a full disk can leave at most one torn final line. Reading
and resuming drop such a line (with a warning) instead of failing on it.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends records to metrics.jsonl; on resume, records past the resumed step are dropped
    so the log matches the weights, and a torn (half-written) line is dropped and reported."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            records, torn = parse_records(self.path.read_text(errors="replace"))
            if torn:
                _report_torn(self.path, torn)
            kept = [record for record in records if _step_of(record) <= resume_step]
            text = "".join(json.dumps(record) + "\n" for record in kept)
            _atomic_write_text(self.path, text)

    def write(self, record: dict[str, Any]) -> None:
        """Append one whole line: a single write call on an O_APPEND descriptor, then fsync."""
        data = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            self._repair_torn_tail(fd)
            written = os.write(fd, data)
            while written < len(data):  # short writes are rare (signals, pipes) but allowed by POSIX
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)

    def _repair_torn_tail(self, fd: int) -> None:
        """If the file does not end with a newline (an earlier write was cut), end the torn line,
        so the next record is not glued onto it; readers then drop the torn line alone."""
        size = os.fstat(fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                os.write(fd, b"\n")

    def read(self) -> list[dict[str, Any]]:
        """All whole records; a torn or garbled line is skipped (and reported), never fatal."""
        if not self.path.exists():
            return []
        records, torn = parse_records(self.path.read_text(errors="replace"))
        if torn:
            _report_torn(self.path, torn)
        return records


def parse_records(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(the JSON-object lines of `text`, the lines that are not: torn or garbled)."""
    records, torn = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn.append(line)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn.append(line)
    return records, torn


def _step_of(record: dict[str, Any]) -> float:
    try:
        return float(record.get("step", 0))
    except (TypeError, ValueError):
        return 0


def _report_torn(path: Path, torn: list[str]) -> None:
    shown = torn[-1][:60] + ("..." if len(torn[-1]) > 60 else "")
    message = (f"difflab: {path}: dropped {len(torn)} incomplete line(s) (a write was cut short, e.g. by a full "
               f"disk or a kill): {shown!r}")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _atomic_write_text(path: Path, text: str) -> None:
    from difflab.training.checkpoint import atomic_write
    atomic_write(path, lambda temp: temp.write_text(text))


# Logged values that are bookkeeping, not training curves.
NOT_CURVES = {"step", "seconds", "images_per_second", "images_seen", "lr"}


def plot_training_curves(records: list[dict[str, Any]], path: Path) -> Path | None:
    """The run's training curves as one PNG: the diffusion loss (plot_loss_curve), or for a family
    that logs several values (a GAN's G and D losses, R1, ADA's p, the sign of D's real logits)
    one panel per value against step. None when there is nothing to plot."""
    if any("loss" in record for record in records):
        return plot_loss_curve(records, path)
    names = [name for name in dict.fromkeys(k for r in records for k in r)
             if name not in NOT_CURVES and all(isinstance(r.get(name, 0.0), (int, float)) for r in records)]
    if len(records) < 2 or not names:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), dpi=110, squeeze=False)
    for axis, name in zip(axes.flat, names):
        points = [(r["step"], r[name]) for r in records if name in r]
        axis.plot(*zip(*points), linewidth=1)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


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
