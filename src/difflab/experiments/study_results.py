"""The study's results: one JSON document, and the table a person reads (markdown or HTML).

A value that could not be measured is printed as "n/a" with a numbered note giving
the reason; nothing is filled in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from difflab import __version__
from difflab.experiments.study import StudyRow, baseline_row
from difflab.samplers import SAMPLERS

RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"


def row_record(row: StudyRow, baseline: StudyRow) -> dict[str, Any]:
    return {
        "label": row.spec.label,
        "sampler": row.spec.sampler,
        "steps": row.spec.steps,
        "eta": row.spec.eta,
        "folder": str(row.folder),
        "num_images": row.num_images,
        "seconds": row.seconds,
        "images_per_second": row.images_per_second,
        "network_evaluations": row.network_evaluations,
        "speedup": baseline.seconds / row.seconds,
        "metrics": row.metrics,
        **({"model": row.model, "run": row.run} if row.model else {}),
    }


def results_document(rows: list[StudyRow], setup: dict[str, Any], scoring: dict[str, Any] | None) -> dict[str, Any]:
    baseline = baseline_row(rows)
    return {"difflab_version": __version__, **setup, "baseline": baseline.spec.label, "scoring": scoring,
            "rows": [row_record(row, baseline) for row in rows]}


def write_results_json(document: dict[str, Any], folder: Path) -> Path:
    path = Path(folder) / RESULTS_JSON
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def read_results(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / RESULTS_JSON).read_text())


class Notes:
    """Numbered reasons for n/a cells; the same reason gets the same number."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def missing(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"n/a [{self.reasons.index(reason) + 1}]"


def metric_cell(metric: dict[str, Any] | None, notes: Notes, kind: str) -> str:
    if not metric:
        return notes.missing("not scored (no --real given)")
    if metric.get("value") is None:
        return notes.missing(metric.get("reason", "not computed"))
    if kind == "kid":
        return f"{metric['value']:.4f} ± {metric['std']:.4f}"
    if kind == "afd":
        return f"{metric['value']:.1%}"
    return f"{metric['value']:.2f}"


def results_table(document: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and the numbered notes of the results table."""
    scoring = document.get("scoring") or {}
    distance = scoring.get("distance", "FD")
    extractor = f" ({scoring['extractor']})" if scoring.get("extractor") else ""
    several = any("model" in row for row in document["rows"])
    header = (["run", "model"] if several else []) + ["sampler", "steps", "eta", "network evals", "time (s)", "images/s",
              f"speed-up vs {document['baseline']}", f"{distance}{extractor} ↓", "KID ↓", "AFD rate"]
    notes, rows = Notes(), []
    for row in document["rows"]:
        metrics = row["metrics"]
        entry = SAMPLERS.get(row["sampler"])  # None: another family's setting, named by its label
        rows.append(([Path(row["run"]).name, row["model"]] if several else []) +
                    [entry.display_name if entry else row["label"], str(row["steps"]),
                     entry.eta_cell(row["eta"]) if entry else "", f"{row['network_evaluations']:,}",
                     f"{row['seconds']:.2f}", f"{row['images_per_second']:.1f}", f"{row['speedup']:.1f}×",
                     *(metric_cell(metrics.get(kind), notes, kind) for kind in ("distance", "kid", "afd"))])
    return header, rows, [f"[{number}] {reason}" for number, reason in enumerate(notes.reasons, 1)]


def setup_lines(document: dict[str, Any]) -> list[str]:
    """The conditions every number in the table was measured under."""
    scoring = document.get("scoring") or {}
    runs = document.get("models") or [document]
    lines = [
        "; ".join(f"run: {model['run']} (checkpoint step {model['step']}"
                  + (f", {model['model']})" if "model" in model else ")") for model in runs),
        f"{document['num_images']:,} images per row, seed {document['seed']} for every row (same starting noise), "
        f"batch size {document['batch_size']}, device {document['device']}, precision {document['precision']}",
        f"timing: {document['timing']}",
    ]
    if scoring:
        lines.append(f"quality: {scoring['distance']} and KID in {scoring['extractor']} features against "
                     f"{scoring['reference']} ({scoring['reference_images']:,} images); lower is better")
        if scoring.get("reference_afd_rate") is not None:
            lines.append(f"AFD: {scoring['detector']}; rate on the real images {scoring['reference_afd_rate']:.1%}")
    return lines


def results_markdown(document: dict[str, Any]) -> str:
    header, rows, notes = results_table(document)
    title = "Model comparison" if len(document.get("models") or []) > 1 else "DDPM versus DDIM"
    lines = [f"# {title}", ""] + [f"- {line}" for line in setup_lines(document)] + [""]
    lines.append("| " + " | ".join(header) + " |")
    text_columns = header.index("network evals")
    lines.append("|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    if notes:
        lines += [""] + [f"{note}  " for note in notes]
    return "\n".join(lines) + "\n"


def write_results_markdown(document: dict[str, Any], folder: Path) -> Path:
    path = Path(folder) / RESULTS_MARKDOWN
    path.write_text(results_markdown(document))
    return path
