"""The study's plot: sample quality against sampling time, one labelled point per sampler setting."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from difflab.samplers import SAMPLERS

OTHER_COLOUR = "tab:gray"  # settings of other model families (e.g. StyleGAN2-psi1)


def colour_of(sampler: str) -> str:
    """A row's colour: its sampler's, from the registry."""
    entry = SAMPLERS.get(sampler)
    return entry.colour if entry else OTHER_COLOUR


def plot_quality_vs_time(document: dict[str, Any], path: str | Path) -> Path:
    """Distance (FD/FID) and KID against wall time (log axis). Rows whose metric could not be
    computed are left out of that panel, and the panel says so; it is never interpolated."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scoring = document.get("scoring") or {}
    panels = [("distance", f"{scoring.get('distance', 'FD')} ({scoring.get('extractor', 'not scored')})"),
              ("kid", "KID")]
    figure, axes_row = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=110)
    for axes, (key, title) in zip(axes_row, panels):
        points = [(row["seconds"], row["metrics"].get(key, {}).get("value"), row["label"], row.get("sampler", ""))
                  for row in document["rows"]]
        measured = [(seconds, value, label, sampler) for seconds, value, label, sampler in points if value is not None]
        for seconds, value, label, sampler in measured:
            axes.scatter(seconds, value, color=colour_of(sampler), zorder=3)
            axes.annotate(label, (seconds, value), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if len(measured) < len(points):
            missing = ", ".join(label for _, value, label, _ in points if value is None)
            axes.text(0.02, 0.02, f"not measured: {missing}\n(see results.md)", transform=axes.transAxes,
                      fontsize=8, color="gray", va="bottom")
        axes.set_xscale("log")
        axes.set_xlabel(f"sampling time for {document['num_images']:,} images (s, log scale)")
        axes.set_ylabel(f"{title} (lower is better)")
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(f"Quality against time ({document['device']}, warm-up excluded)")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
