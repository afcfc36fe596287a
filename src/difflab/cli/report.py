"""`difflab report RUN --out report.html`: one self-contained HTML file to hand in."""
from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from difflab.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="one self-contained HTML report of a run (images embedded)",
        description="Configuration, loss curve, samples, progressive generation, fusion, the DDPM-versus-DDIM "
                    "study and metrics in one HTML file. Figures not given are generated quickly with DDIM.")
    parser.add_argument("run", help="run folder made by `difflab train`, or a ckpt-*.safetensors file")
    parser.add_argument("--out", required=True, help="the .html file to write")
    parser.add_argument("--study", help="folder written by `difflab compare`")
    parser.add_argument("--progress", metavar="PNG", help="figure from `difflab progress` (else one is generated)")
    parser.add_argument("--fusion", metavar="PNG", help="strip from `difflab fuse` (else two are generated)")
    parser.add_argument("--metrics", metavar="JSON", help="results of `difflab eval --json`")
    parser.add_argument("--title", default=None, help="report title (default: the run folder's name)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps for generated figures (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated figures (default 0)")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run)


def existing_file(value: str | None, flag: str) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.exists():
        raise ConfigError(f"{flag} {path} does not exist")
    return path


def run(args: argparse.Namespace) -> int:
    from difflab import __version__
    from difflab.experiments import report_sections as sections
    from difflab.experiments.report import render_report
    from difflab.generation import load_model

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out must end in .html; got {out}")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out {out} exists; pass --overwrite to replace it")
    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1; got {args.steps}")
    study = existing_file(args.study, "--study")
    progress, fusion = existing_file(args.progress, "--progress"), existing_file(args.fusion, "--fusion")
    metrics = existing_file(args.metrics, "--metrics")

    loaded = load_model(args.run, device=args.device, weights=args.weights)
    run_dir = sections.run_folder(args.run)
    steps = min(args.steps, loaded.schedule.timesteps)
    parts = [
        sections.configuration_section(run_dir, loaded),
        sections.loss_section(run_dir),
        sections.samples_section(run_dir),
        sections.progress_section(loaded, progress, steps, args.seed),
        sections.fusion_section(loaded, fusion, steps, args.seed),
        sections.study_section(study),
        sections.metrics_section(metrics, study),
    ]
    title = args.title or f"difflab report: {run_dir.resolve().name}"
    subtitle = f"{loaded.checkpoint} (step {loaded.step:,}); difflab {__version__}, {datetime.now():%Y-%m-%d %H:%M}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(title, subtitle, parts), encoding="utf-8")
    print(f"difflab: wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(parts)} sections, images embedded)")
    return 0
