"""`difflab ablate-warm-start RUN --prior PRIOR --passes 0,1,2 --start-t 100,200 --sampler ddpm,ddim --real REAL
--out DIR`: the warm-start ablation (experiments/warm_ablation.py) as results.json, results.md and a plot of
quality against time."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.sample import add_generation_options, load_for_generation, resolve_precision, speed_up
from difflab.cli.scoring_options import add_scoring_options, scoring_options
from difflab.errors import OPTION, ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ablate-warm-start", help="warm-started sampling: prior passes x start steps x samplers, timed and scored",
        description="Sample a diffusion run from a prior's noised estimate (a denoiser run, a GAN run or an image "
                    "folder) for every --passes x --start-t x --sampler setting, with baselines from pure noise at "
                    "the same network evaluations and the prior alone; time and score each. Writes OUT/<row>/, "
                    "OUT/results.json, OUT/results.md and OUT/quality_vs_time.png.")
    parser.add_argument("run", help="the diffusion run (folder or ckpt-*.safetensors)")
    parser.add_argument("--prior", dest="warm_start", required=True, metavar="RUN|FOLDER",
                        help="a denoiser run, a GAN run, or an image folder/.zip (as sample --warm-start)")
    parser.add_argument("--passes", default=None, metavar="K,K,...",
                        help="denoiser prior: passes from noise, e.g. 0,1,2,3,5,10,20,50 (default: the run's "
                             "--sample-passes)")
    parser.add_argument("--start-t", default="100,200,500", metavar="T0,T0,...",
                        help="start steps (default 100,200,500)")
    parser.add_argument("--sampler", default="ddpm", metavar="NAME,NAME,...",
                        help="samplers of the warm rows, e.g. ddpm,ddim (default ddpm)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps over t0 ... 0 (default: the sampler's, at most t0 + 1; DDPM all)")
    parser.add_argument("--eta", type=float, default=0.0, help="eta of DDIM/DPM-Solver++ rows (default 0)")
    parser.add_argument("--plain", default="", metavar="SAMPLER:STEPS,...",
                        help="more plain rows from pure noise, at their own step counts, e.g. ddim:50,dpmpp-2m:20 "
                             "(the best plain samplers to beat at equal time)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="no plain rows (DDPM, DDIM, DPM-Solver++ from noise at the same NFE) and no "
                             "prior-alone rows; --plain rows are still made")
    parser.add_argument("--digits", metavar="FILE.py:FUNCTION", default=None,
                        help="a digit classifier for the confident-digit rate, e.g. ../shared/eval/featnet.py:mnist")
    parser.add_argument("-n", "--num-images", type=int, default=1000, help="images per row (default 1000)")
    parser.add_argument("--real", help="real images (folder, .zip) or .npz statistics to score against")
    parser.add_argument("--out", required=True, help="ablation folder")
    parser.add_argument("--batch-size", type=int, default=250, help="images per sampling batch (default 250)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier ablation in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_generation_options(parser.add_argument_group("sampling (shared by every row; the seed too)"))
    add_scoring_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from difflab.experiments import warm_ablation as ablation
    from difflab.experiments.scoring import Scorer
    from difflab.experiments.study import TIMING_NOTE, GenerationSettings, generate_row, warm_up
    from difflab.families import require_family
    from difflab.generation.warm_start import check_warm_start, load_prior, prior_kind, warm_steps, with_warm_start
    from difflab.metrics.classifier import folder_digit_rate, load_classifier
    from difflab.samplers import timesteps_for
    from difflab.viz.study_plot import plot_quality_vs_time

    # ---- every check before any work -------------------------------------------------------------
    out = Path(args.out)
    if (out / ablation.RESULTS_JSON).exists() and not args.overwrite:
        raise ConfigError(f"{OPTION} {out} already holds an ablation; pass {{option:overwrite}} or choose another",
                          option="out")
    if args.num_images < 1 or args.batch_size < 1:
        raise ConfigError(f"{OPTION} and {{option:batch_size}} must be at least 1", option="num_images")
    samplers = ablation.parse_samplers(args.sampler)
    start_ts = ablation.parse_int_list(args.start_t, "start_t")
    kind = prior_kind(args.warm_start)
    if args.passes is not None and kind != "denoiser":
        raise ConfigError(f"{OPTION} counts denoiser passes; {args.warm_start} is a {kind} prior", option="passes")
    passes = ablation.parse_int_list(args.passes, "passes") if args.passes is not None else [None]
    extra_plain = ablation.parse_plain(args.plain) if args.plain else []
    loaded = load_for_generation(args)
    require_family(loaded, "diffusion", "ablate-warm-start")
    timesteps = loaded.schedule.timesteps
    for start_t in start_ts:
        check_warm_start(args.warm_start, None, start_t, timesteps)
        for sampler in samplers:  # --steps over t0 ... 0
            timesteps_for(timesteps, warm_steps(sampler, args.steps, start_t), args.spacing, start_t)
    for sampler, steps in extra_plain:
        if steps > timesteps:
            raise ConfigError(f"{OPTION} {sampler}:{steps} has more steps than the model's {timesteps}", option="plain")
    prior = load_prior(args.warm_start, loaded.image_shape(), loaded.device)
    digits_network = None
    if args.digits:
        digits_network = load_classifier(args.digits, str(loaded.device))
    sampling = {"eta": args.eta, "spacing": args.spacing, "clip": args.clip}
    warm = ablation.warm_settings(samplers, start_ts, passes, args.steps, prior.label, prior.network_passes,
                                  sampling)
    settings = list(warm)
    if args.no_baselines:
        settings += ablation.plain_settings([], timesteps, sampling, extra=extra_plain)
    else:
        settings += ablation.plain_settings(warm, timesteps, sampling, extra=extra_plain)
        if kind == "gan":
            settings.append(ablation.Setting("prior", "GAN alone (psi 1)", "prior", 0, 1,
                                             options=(("truncation", 1.0),)))
        elif kind == "denoiser":
            for k in sorted({k for k in passes if k is None or k > 0}, key=lambda k: -1 if k is None else k):
                settings.append(ablation.Setting("prior", f"{prior.label(k)} alone", "prior", 0,
                                                 prior.network_passes(k), None, k, (("passes", k),)))
    if len({s.label for s in settings}) != len(settings):
        raise ConfigError(f"{OPTION}: two settings share a label", option="passes")
    precision = resolve_precision(args.precision, loaded.device)
    total_passes = sum(s.sampler_steps for s in settings) * -(-args.num_images // args.batch_size)
    loaded = speed_up(loaded, args, precision, total_passes)
    scorer = Scorer(args.real, scoring_options(args, loaded.device)) if args.real else None

    # ---- the rows -----------------------------------------------------------------------------------
    def generator_of(setting):
        if setting.kind == "warm":
            return with_warm_start(loaded, args.warm_start, setting.start_t, setting.passes, prior=prior)
        if setting.kind == "prior":
            return prior.generator
        return loaded

    generation = GenerationSettings(args.num_images, args.batch_size, args.seed, precision, args.spacing, args.clip,
                                    "png", args.overwrite, not args.no_progress)
    setup = {"run": str(args.run), "checkpoint": str(loaded.checkpoint), "step": loaded.step, "prior": args.warm_start,
             "prior_kind": kind, "device": str(loaded.device), "precision": precision, "batch_size": args.batch_size,
             "num_images": args.num_images, "seed": args.seed, "spacing": args.spacing, "timing": TIMING_NOTE,
             "digits": args.digits, "timesteps": timesteps,
             "warm_up_seconds": warm_up(loaded, min(args.batch_size, args.num_images), precision)}
    if prior.generator is not None:
        warm_up(prior.generator, min(args.batch_size, args.num_images), precision)
    rows: dict[int, dict] = {}
    out.mkdir(parents=True, exist_ok=True)
    # cheapest rows first, so a run stopped early (a time limit) keeps the most rows; the table keeps
    # the settings' order
    order = sorted(range(len(settings)), key=lambda i: settings[i].sampler_steps + settings[i].prior_evaluations)
    for index in tqdm(order, desc="ablation", unit="row", disable=args.no_progress):
        setting = settings[index]
        folder = out / f"{index + 1:02d}-{setting.spec.folder_name}"
        row, _ = generate_row(generator_of(setting), setting.spec, generation, folder)
        metrics = scorer.score(str(folder)) if scorer else {}
        digits = (folder_digit_rate(digits_network, str(folder), loaded.image_shape()[-1])
                  if digits_network is not None else None)
        rows[index] = ablation.row_record(setting, row.seconds, args.num_images, folder, metrics, digits)
        document = ablation.results_document([rows[i] for i in sorted(rows)], setup, scorer.describe() if scorer else None)
        (out / ablation.RESULTS_JSON).write_text(json.dumps(document, indent=2) + "\n")  # kept if stopped
    markdown = ablation.results_markdown(document)
    (out / ablation.RESULTS_MARKDOWN).write_text(markdown)
    plot_quality_vs_time(document, out / ablation.PLOT)
    print(markdown)
    print(f"difflab: wrote {out / ablation.RESULTS_JSON}, {out / ablation.RESULTS_MARKDOWN} and {out / ablation.PLOT}")
    return 0

