"""`difflab compare RUN [RUN ...] --samplers ddpm:1000,ddim:50,... -n N --real FOLDER --out study/`:
the DDPM-versus-DDIM study, timed and scored, as results.json, results.md and a plot. Runs of
several model families (a StyleGAN2 run beside a diffusion run) share one table: each model turns
the options into its own rows (ImageGenerator.study_settings), all scored the same way."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.cli.flags import add_alias
from difflab.cli.sample import add_generation_options, load_for_generation, resolve_precision, speed_up
from difflab.cli.scoring_options import add_scoring_options, scoring_options
from difflab.errors import OPTION, ConfigError

DEFAULT_SAMPLERS = "ddpm,ddim:100,ddim:50,ddim:20,ddim:10"
SAME_SEEDS_FIGURE = "same_seeds.png"
PLOT = "quality_vs_time.png"


def register(subparsers: argparse._SubParsersAction) -> None:
    from difflab.cli.sample import steps_defaults
    from difflab.experiments.study import SPEC_HELP
    from difflab.samplers import sampler_names

    parser = subparsers.add_parser(
        "compare", help="DDPM versus DDIM: time and quality of several sampler settings",
        description="Generate the same seeds with each sampler setting, time the sampling (warm-up excluded) and "
                    "score each set against --real. Writes OUT/<setting>/1.png ..., OUT/results.json, "
                    "OUT/results.md and OUT/quality_vs_time.png.")
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders made by `difflab train` (or ckpt-*.safetensors files), of any model family: "
                             "every row of every run goes into one table, scored the same way")
    parser.add_argument("--samplers", default=DEFAULT_SAMPLERS,
                        help=f"diffusion runs: {SPEC_HELP}; SAMPLER is one of {', '.join(sampler_names())}, and "
                             f"without STEPS takes its default ({steps_defaults()}) (default {DEFAULT_SAMPLERS})")
    parser.add_argument("--truncations", default="1", metavar="PSI,PSI,...",
                        help="GAN runs: one row per truncation psi (default 1 = none, the honest setting; e.g. 1,0.75)")
    parser.add_argument("-n", "--num-images", type=int, default=1000, help="images per setting (default 1000)")
    parser.add_argument("--real", help="real images (folder, .zip) or .npz statistics to score against; "
                                       "without it only speed is measured")
    parser.add_argument("--out", required=True, help="study folder")
    parser.add_argument("--batch-size", type=int, default=250, help="images per sampling batch (default 250)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="image files (default png: lossless)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier study in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_generation_options(parser.add_argument_group("sampling (shared by every row; the seed too)"))
    add_scoring_options(parser)
    add_alias(parser, "--metrics-batch-size", "--feature-batch-size")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.experiments.scoring import Scorer
    from difflab.experiments.study import TIMING_NOTE, GenerationSettings, generate_row, warm_up
    from difflab.experiments.study_results import (RESULTS_JSON, results_document, results_markdown,
                                                   write_results_json, write_results_markdown)
    from difflab.generation.fast import network_passes
    from difflab.viz.figures import auto_scale, labelled_grid
    from difflab.viz.study_plot import plot_quality_vs_time

    out = Path(args.out)
    if (out / RESULTS_JSON).exists() and not args.overwrite:
        raise ConfigError(f"{OPTION} {out} already holds a study ({RESULTS_JSON}); pass {{option:overwrite}} or "
                          "choose another", option="out")
    if args.num_images < 1 or args.batch_size < 1:
        raise ConfigError(f"{OPTION} and {{option:batch_size}} must be at least 1", option="num_images")
    models = []
    for run_path in args.runs:  # every model and its rows first, so a bad option fails before any sampling
        args.run = run_path
        loaded = load_for_generation(args)
        models.append((run_path, loaded, loaded.study_settings(samplers=args.samplers, truncations=args.truncations)))
    precision = resolve_precision(args.precision, models[0][1].device)
    models = [(run_path, speed_up(loaded, args, precision,
                                  sum(network_passes(args.num_images, args.batch_size, spec.steps) for spec in specs)),
               specs) for run_path, loaded, specs in models]
    # The real set is measured first, so a bad --real or --features fails before hours of sampling.
    scorer = Scorer(args.real, scoring_options(args, models[0][1].device)) if args.real else None
    settings = GenerationSettings(args.num_images, args.batch_size, args.seed, precision, args.spacing, args.clip,
                                  args.format, args.overwrite, not args.no_progress)
    several = len(models) > 1
    setups = []
    for index, (run_path, loaded, _) in enumerate(models):
        setups.append({"run": str(run_path), "model": loaded.family, "checkpoint": str(loaded.checkpoint),
                       "step": loaded.step, "speed": loaded.speed.describe() if loaded.speed else "plain",
                       "guidance": getattr(loaded, "guidance", None),
                       "warm_up_seconds": warm_up(loaded, min(args.batch_size, args.num_images), precision)})
    first = setups[0]
    setup = {**{key: first[key] for key in ("run", "checkpoint", "step", "speed", "guidance", "warm_up_seconds")},
             "models": setups, "device": str(models[0][1].device), "precision": precision,
             "batch_size": args.batch_size, "num_images": args.num_images, "seed": args.seed, "spacing": args.spacing,
             "timing": TIMING_NOTE}
    scoring = scorer.describe() if scorer else None
    rows, previews, labels = [], [], []
    for index, (run_path, loaded, specs) in enumerate(models):
        prefix = f"{index + 1}-{Path(run_path).name}-" if several else ""
        for spec in specs:
            row, preview = generate_row(loaded, spec, settings, out / f"{prefix}{spec.folder_name}")
            row.model = setups[index]["model"] if several else None
            row.run = str(run_path) if several else None
            if scorer is not None:
                row.metrics = scorer.score(str(row.folder))
            rows.append(row)
            previews.append(preview)
            labels.append(f"{Path(run_path).name} {spec.label}" if several else spec.label)
            # Written after every row, so a long study that is stopped keeps what it measured.
            document = results_document(rows, setup, scoring)
            write_results_json(document, out)

    write_results_markdown(document, out)
    plot_quality_vs_time(document, out / PLOT)
    figure = labelled_grid(torch.stack(previews), [f"#{i + 1}" for i in range(len(previews[0]))], labels,
                           scale=auto_scale(models[0][1].image_shape()[-1]))
    figure.save(out / SAME_SEEDS_FIGURE)
    print(results_markdown(document))
    print(f"difflab: wrote {out / RESULTS_JSON}, {out / 'results.md'}, {out / PLOT} and {out / SAME_SEEDS_FIGURE}")
    return 0
