"""The warm-start ablation (issue 15): the course report's tables (denoiser passes x DDPM steps, with
time), measured. Every setting is generated from the same seeds, timed as `compare` times
(experiments/study.py: warm-up excluded, writing files excluded; the prior's cost is inside the
timed region), and scored with the shared Scorer (FD, KID, AFD where it applies) and, with a digit
classifier, the confident-digit rate (metrics/classifier.py).

Rows:
- warm: prior (each K of --passes for a denoiser) -> q_sample to t0 -> the sampler over t0 ... 0;
- plain: each sampler from pure noise at the same diffusion network evaluations (NFE) as a warm
  row: DDPM over the same number of remaining steps (respaced over T-1 ... 0), DDIM and
  DPM-Solver++(2M) at that NFE;
- prior: the prior alone (the GAN at psi 1; the denoiser after K passes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from difflab import __version__
from difflab.errors import OPTION, ConfigError
from difflab.experiments.study import SamplerSpec
from difflab.experiments.study_results import Notes, metric_cell
from difflab.samplers import SAMPLERS, get_sampler

BASELINE_SAMPLERS = ("ddpm", "ddim", "dpmpp-2m")
RESULTS_JSON, RESULTS_MARKDOWN, PLOT = "results.json", "results.md", "quality_vs_time.png"


def parse_int_list(text: str, option: str, low: int = 0) -> list[int]:
    """'0,1,2' -> [0, 1, 2], each >= low, no repeats; a ConfigError naming the option otherwise."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{OPTION} must be comma-separated whole numbers such as 100,200; got {text!r}",
                          option=option) from None
    if not values or any(v < low for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"{OPTION} must be distinct whole numbers >= {low}; got {text!r}", option=option)
    return values


def parse_samplers(text: str) -> list[str]:
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    for name in names:
        get_sampler(name)
    if not names:
        raise ConfigError(f"{OPTION} is empty", option="sampler")
    return names


@dataclass(frozen=True)
class Setting:
    """One row: what generates it and how it is labelled."""
    kind: str  # "warm", "plain" or "prior"
    label: str
    sampler: str  # the sampler's name, or "prior"
    sampler_steps: int  # diffusion network evaluations per image
    prior_evaluations: int  # prior network evaluations per image
    start_t: int | None = None
    passes: int | None = None
    options: tuple[tuple[str, Any], ...] = ()  # the generator's generate() keywords

    @property
    def spec(self) -> SamplerSpec:
        return SamplerSpec(self.sampler, self.sampler_steps, options=self.options, name=self.label)


def warm_settings(samplers: list[str], start_ts: list[int], passes: list[int | None], steps: int | None,
                  prior_label: Callable[[int | None], str], prior_cost: Callable[[int | None], int],
                  sampling: dict[str, Any]) -> list[Setting]:
    """The grid: sampler x t0 x passes (passes [None] for a prior without passes)."""
    from difflab.generation.generate import sampler_label
    from difflab.generation.warm_start import warm_steps
    settings = []
    for sampler in samplers:
        for start_t in start_ts:
            for k in passes:
                n = warm_steps(sampler, steps, start_t)
                label = f"{prior_label(k)} + {sampler_label(sampler, n, 10**9)} from t0={start_t}"
                settings.append(Setting("warm", label, sampler, n, prior_cost(k), start_t, k,
                                        (("sampler", sampler), ("steps", n), *sampling.items())))
    return settings


def parse_plain(text: str) -> list[tuple[str, int]]:
    """'ddim:50,dpmpp-2m:20' -> [('ddim', 50), ('dpmpp-2m', 20)]; a ConfigError naming --plain otherwise."""
    pairs = []
    for part in (p.strip() for p in str(text).split(",")):
        name, _, steps = part.partition(":")
        if not part or not steps.strip().isdigit() or int(steps) < 1:
            raise ConfigError(f"{OPTION} must be SAMPLER:STEPS pairs such as ddim:50,dpmpp-2m:20; got {text!r}",
                              option="plain")
        if name.strip() not in SAMPLERS:
            raise ConfigError(f"{OPTION}: {name.strip()!r} is no sampler; the samplers are {', '.join(SAMPLERS)}",
                              option="plain")
        pairs.append((name.strip(), int(steps)))
    return pairs


def plain_settings(warm: list[Setting], timesteps: int, sampling: dict[str, Any],
                   samplers: tuple[str, ...] = BASELINE_SAMPLERS,
                   extra: list[tuple[str, int]] = ()) -> list[Setting]:
    """Each baseline sampler from pure noise at every diffusion NFE a warm row has, then the `extra`
    (sampler, steps) rows (--plain: the best plain samplers, at their own step counts)."""
    from difflab.generation.generate import sampler_label
    pairs = [(sampler, n) for n in sorted({s.sampler_steps for s in warm}, reverse=True) for sampler in samplers]
    settings, seen = [], set()
    for sampler, n in [*pairs, *extra]:
        label = f"{sampler_label(sampler, n, timesteps)} from noise"
        if n <= timesteps and label not in seen:
            seen.add(label)
            settings.append(Setting("plain", label, sampler, n, 0, timesteps - 1, None,
                                    (("sampler", sampler), ("steps", n), *sampling.items())))
    return settings


def row_record(setting: Setting, seconds: float, num_images: int, folder: Path, metrics: dict[str, Any],
               digits: dict[str, Any] | None) -> dict[str, Any]:
    return {"label": setting.label, "kind": setting.kind, "sampler": setting.sampler, "start_t": setting.start_t,
            "passes": setting.passes, "sampler_steps": setting.sampler_steps,
            "prior_evaluations": setting.prior_evaluations,
            "network_evaluations": setting.sampler_steps + setting.prior_evaluations,
            "steps": setting.sampler_steps, "eta": 0.0,
            "seconds": seconds, "images_per_second": num_images / seconds if seconds > 0 else math.inf,
            "folder": str(folder), "num_images": num_images, "metrics": metrics, "digits": digits}


def results_document(rows: list[dict[str, Any]], setup: dict[str, Any], scoring: dict[str, Any] | None) -> dict:
    return {"difflab_version": __version__, **setup, "scoring": scoring, "rows": rows}


def digit_cell(digits: dict[str, Any] | None) -> str:
    if not digits:
        return "–"
    return f"{digits['rate']:.1%} ({digits['classes_covered']}/10)"


def results_markdown(document: dict[str, Any]) -> str:
    scoring = document.get("scoring") or {}
    distance = f"{scoring.get('distance', 'FD')} ({scoring.get('extractor', 'not scored')})"
    header = ["setting", "kind", "passes", "t0", "diffusion NFE", "prior NFE", "time (s)", "images/s",
              f"{distance} ↓", "KID ↓", "AFD rate", "confident digits"]
    notes, lines = Notes(), []
    for row in document["rows"]:
        metrics = row["metrics"] or {}
        lines.append([row["label"], row["kind"], "" if row["passes"] is None else str(row["passes"]),
                      "" if row["start_t"] is None else str(row["start_t"]), str(row["sampler_steps"]),
                      str(row["prior_evaluations"]), f"{row['seconds']:.2f}", f"{row['images_per_second']:.1f}",
                      *(metric_cell(metrics.get(kind), notes, kind) for kind in ("distance", "kid", "afd")),
                      digit_cell(row.get("digits"))])
    text = [f"# Warm-started sampling: {document['run']} with the prior {document['prior']}", "",
            f"- {document['num_images']:,} images per row, seed {document['seed']} for every row, batch size "
            f"{document['batch_size']}, device {document['device']}, precision {document['precision']}",
            f"- timing: {document['timing']}; a warm row's time includes its prior",
            "- NFE: network evaluations per image (diffusion model; prior: denoiser passes or the GAN's one)"]
    if scoring:
        text.append(f"- quality: {distance} and KID against {scoring['reference']} "
                    f"({scoring['reference_images']:,} images); lower is better")
    if document.get("digits"):
        text.append(f"- confident digits: share of images the classifier {document['digits']} gives one class at "
                    "p >= 0.9 (classes covered of 10)")
    text += ["", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * (len(header) - 4)) + "|"]
    text += ["| " + " | ".join(cells) + " |" for cells in lines]
    if notes.reasons:
        text += [""] + [f"[{i}] {reason}  " for i, reason in enumerate(notes.reasons, 1)]
    return "\n".join(text) + "\n"
