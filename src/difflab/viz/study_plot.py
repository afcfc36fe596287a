"""The study's plot: sample quality against sampling time, one labelled point per sampler setting."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from difflab.samplers import SAMPLERS

OTHER_COLOUR = "tab:gray"  # settings of other model families (e.g. StyleGAN2-psi1)


def colour_of(sampler: str) -> str:
    """A row's colour: its sampler's, from the registry."""
    entry = SAMPLERS.get(sampler)
    return entry.colour if entry else OTHER_COLOUR


MARKERS = {"warm": "o", "plain": "s", "prior": "^"}  # the ablation's row kinds; the study's rows have none
LABEL_ALL_UP_TO = 12  # more rows than this: only the best-at-their-time (Pareto) points, numbered, with a key
LOG_SCALE_RATIO = 10  # values spanning more than this factor get a log axis
KEY_LINE_INCHES = 0.14  # height of one line of a panel's key below the axes
KEY_TOP_INCHES = 0.6  # where the key starts below the axes: under their tick labels and x label


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats on both time and value (lower is better)."""
    front, best = set(), float("inf")
    for index in sorted(range(len(points)), key=lambda i: points[i]):
        if points[index][1] < best:
            front.add(index)
            best = points[index][1]
    return front


def point_labels(measured: list[tuple[float, float, str]]) -> tuple[dict[int, str], list[str]]:
    """What to write beside each (seconds, value, label) point, and the key below the panel. Up to
    LABEL_ALL_UP_TO points: every label, no key. More: the Pareto front only, numbered in order of
    time, the numbers' labels in the key (full labels of close points would overlap)."""
    if len(measured) <= LABEL_ALL_UP_TO:
        return {index: label for index, (_, _, label) in enumerate(measured)}, []
    front = sorted(pareto_front([(seconds, value) for seconds, value, _ in measured]), key=lambda i: measured[i][0])
    marks = {index: str(number) for number, index in enumerate(front, start=1)}
    return marks, [f"{marks[index]}: {measured[index][2]}" for index in front]


def plot_quality_vs_time(document: dict[str, Any], path: str | Path) -> Path:
    """Distance (FD/FID) and KID against wall time (log axis). Rows whose metric could not be
    computed are left out of that panel, and the panel says so; it is never interpolated. With many
    rows only the Pareto front is labelled; the marker shows the row's kind (warm, plain, prior)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    scoring = document.get("scoring") or {}
    panels = [("distance", f"{scoring.get('distance', 'FD')} ({scoring.get('extractor', 'not scored')})"),
              ("kid", "KID")]
    panel_points = []
    for key, _ in panels:
        points = [(row["seconds"], row["metrics"].get(key, {}).get("value"), row["label"], row.get("sampler", ""),
                   row.get("kind")) for row in document["rows"]]
        measured = [point for point in points if point[1] is not None]
        panel_points.append((points, measured, *point_labels([point[:3] for point in measured])))
    key_lines = max(len(keys) for *_, keys in panel_points)
    figure, axes_row = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4 + KEY_LINE_INCHES * key_lines),
                                    dpi=110)
    for axes, (_, title), (points, measured, marks, keys) in zip(axes_row, panels, panel_points):
        kinds = {kind for *_, kind in measured}
        for index, (seconds, value, label, sampler, kind) in enumerate(measured):
            axes.scatter(seconds, value, color=colour_of(sampler), marker=MARKERS.get(kind, "o"), zorder=3)
            if index in marks:
                mark = axes.annotate(marks[index], (seconds, value), textcoords="offset points", xytext=(5, 5),
                                     fontsize=8)
                mark.set_in_layout(False)  # a long label near the edge must not defeat tight_layout
        if keys:
            key = axes.annotate("\n".join(keys), xy=(0, 0), xycoords="axes fraction", xytext=(0, -38),
                                textcoords="offset points", fontsize=7, va="top", family="monospace")
            key.set_in_layout(False)  # room is made below (tight_layout cannot fit a wide key)
        values = [value for _, value, *_ in measured if value > 0]
        if values and max(values) > LOG_SCALE_RATIO * min(values):
            axes.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.5, not 5 x 10^-1
            axes.yaxis.set_major_formatter(plain)
            axes.yaxis.set_minor_formatter(plain)
        if kinds - {None}:
            from matplotlib.lines import Line2D
            handles = [Line2D([], [], color="gray", marker=marker, linestyle="", label=kind)
                       for kind, marker in MARKERS.items() if kind in kinds]
            legend_title = "numbered: best at their time" if keys else None
            axes.legend(handles=handles, fontsize=8, title=legend_title, title_fontsize=8, loc="best")
        if len(measured) < len(points):
            missing = ", ".join(label for _, value, label, *_ in points if value is None)
            note = axes.text(0.02, 0.02, textwrap.fill(f"not measured: {missing}", 70) + "\n(see results.md)",
                             transform=axes.transAxes, fontsize=8, color="gray", va="bottom")
            note.set_in_layout(False)
        axes.set_xscale("log")
        axes.set_xlabel(f"sampling time for {document['num_images']:,} images (s, log scale)")
        axes.set_ylabel(f"{title} (lower is better)")
        axes.grid(alpha=0.3, which="both")
    figure.suptitle(f"Quality against time ({document['device']}, warm-up excluded)")
    figure.tight_layout()
    if key_lines:  # room below the axes for the key, which tight_layout left out
        figure.subplots_adjust(bottom=(KEY_TOP_INCHES + KEY_LINE_INCHES * key_lines) / figure.get_figheight())
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
