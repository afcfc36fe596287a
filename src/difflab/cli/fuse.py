"""`difflab fuse RUN a.jpg b.jpg --lam 0.5 --t 500 --out fused.png`: fuse two images.

    difflab fuse RUN a.jpg b.jpg --lam 0.5 --t 500 --out fused.png          # the homework's method
    difflab fuse RUN a.jpg b.jpg --method ddim-slerp --lam 0,0.25,0.5,0.75,1 --out strip.png
    difflab fuse RUN --random-pairs 50 --real ./faces --out fused/           # random pairs, then scored
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.flags import add_alias
from difflab.cli.sample import add_sampler_options, load_for_generation, resolve_precision, speed_up
from difflab.cli.scoring_options import add_scoring_options, scoring_options
from difflab.errors import OPTION, ConfigError
from difflab.families import require_family

METHOD_HELP = ("noise-mix (default, the homework): noise both images to --t with q_sample, mix with weight "
               "lambda, denoise from --t; ddim-slerp: DDIM-invert both, slerp the latents, DDIM-decode")


def register(subparsers: argparse._SubParsersAction) -> None:
    from difflab.experiments.fusion import METHODS, NOISE_MODES

    parser = subparsers.add_parser(
        "fuse", help="fuse two images (or random pairs from a folder) with a trained model",
        description="Fuse image a with image b. With one --lam, --out is the fused image and a strip "
                    "[a, fused, b] goes beside it; with several (--lam 0,0.5,1), --out is the strip. With "
                    "--random-pairs N --real FOLDER, --out is a folder of N fused images, which are then scored "
                    "against FOLDER (as difflab eval scores).")
    parser.add_argument("run", help="run folder made by `difflab train`, or a ckpt-*.safetensors file")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="the two images a and b")
    parser.add_argument("--method", choices=METHODS, default="noise-mix", help=METHOD_HELP)
    parser.add_argument("--lam", type=lam_values, default="0.5", metavar="L[,L,...]",
                        help="weight of b: 0 gives a, 1 gives b (default 0.5); several, e.g. 0,0.25,0.5,0.75,1, "
                             "make a strip")
    add_alias(parser, "--lams", "--lam")
    parser.add_argument("--t", type=int, default=None,
                        help="noise-mix: the timestep both images are noised to and denoised from (default T/2)")
    parser.add_argument("--noise", choices=NOISE_MODES, default="shared",
                        help="noise-mix: one noise for both images (default; the mixture then has exactly the "
                             "noise level of --t) or independent noises (the mix has less noise than --t implies)")
    parser.add_argument("--seeds", metavar="A,B", default=None,
                        help="GAN runs: interpolate between the faces of seeds A and B in W space (a GAN has no "
                             "encoder to map given images into its latent space); with several --lam for the strip")
    parser.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                        help="GAN runs, with --seeds: truncation psi of both ends (default 1 = none)")
    parser.add_argument("--random-pairs", type=int, default=None, metavar="N",
                        help="batch mode: fuse N random pairs of --real images")
    parser.add_argument("--real", metavar="REAL",
                        help="batch mode: the real images (folder or .zip) that are paired, and that the fused "
                             "images are scored against")
    add_alias(parser, "--pairs", "--random-pairs")
    add_alias(parser, "--from", "--real")
    parser.add_argument("--out", required=True, help="image or strip file; a folder in batch mode")
    parser.add_argument("--batch-size", type=int, default=50, help="pairs per batch in batch mode (default 50)")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="batch mode image files (default png)")
    parser.add_argument("--no-score", action="store_true", help="batch mode: do not score the fused images")
    parser.add_argument("--scale", type=int, default=None, help="nearest-neighbour enlargement of strips")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # The homework denoises with DDPM, ddim-slerp needs DDIM: None lets FusionSettings pick per method.
    add_sampler_options(parser, default_sampler=None, sampler_help="default: ddpm for noise-mix, ddim for ddim-slerp")
    parser.set_defaults(func=run)
    add_scoring_options(parser)
    add_alias(parser, "--metrics-batch-size", "--feature-batch-size")


def lam_values(text: str) -> list[float]:
    """argparse type of --lam: one weight, or several as a comma list (a strip)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers such as 0,0.5,1; got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from difflab.experiments.fusion import FusionSettings

    loaded = load_for_generation(args)
    if args.seeds is not None:
        return run_seeds(args, loaded)
    require_family(loaded, "diffusion", "fuse with images (noise, mix, denoise)",
                   hint="A GAN has no encoder to map your images into its latent space; it interpolates between "
                        "two generated faces in W space instead: difflab fuse RUN --seeds A,B --lam 0,0.25,0.5,0.75,1 "
                        "--out strip.png")
    precision = resolve_precision(args.precision, loaded.device)
    loaded = speed_up(loaded, args, precision, 0)  # few passes: never worth a compile under auto
    settings = FusionSettings(args.method, args.t, args.noise, args.sampler, args.steps, args.eta, args.spacing,
                              args.clip, precision)
    settings.check()
    if args.random_pairs is not None:
        return run_pairs(args, loaded, settings)
    return run_single(args, loaded, settings)


def run_seeds(args: argparse.Namespace, loaded) -> int:
    """`--seeds A,B`: the strip between two generated images, by the generator's own latent
    interpolation (a GAN's: a straight line in W; ImageGenerator.interpolate_seeds)."""
    from difflab.viz.figures import auto_scale, labelled_grid

    if args.images or args.random_pairs is not None:
        raise ConfigError(f"{OPTION} A,B interpolates between two generated images: give no IMAGE arguments or "
                          "{option:random_pairs}", option="seeds")
    interpolate = getattr(loaded, "interpolate_seeds", None)
    if interpolate is None:
        raise ConfigError(f"{OPTION}: a {loaded.family} run has no latent interpolation here; fuse two images instead",
                          option="seeds")
    try:
        seed_a, seed_b = (int(part) for part in args.seeds.split(","))
    except ValueError:
        raise ConfigError(f"{OPTION} must be two integers A,B such as 3,17; got {args.seeds!r}", option="seeds") from None
    out = Path(args.out)
    _refuse_existing(out, args)
    lams = args.lam if len(args.lam) > 1 else [0.0, *args.lam, 1.0]
    images = interpolate(seed_a, seed_b, lams, truncation=args.truncation)
    out.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(images[None], [f"{lam:g}" for lam in lams], [f"seeds {seed_a}->{seed_b}"],
                  scale=args.scale or auto_scale(images.shape[-1])).save(out)
    print(f"difflab: wrote {out}: seed {seed_a} to seed {seed_b} in W space at lams {', '.join(f'{l:g}' for l in lams)}")
    return 0


def run_single(args: argparse.Namespace, loaded, settings) -> int:
    from difflab.experiments.fusion_outputs import fuse_strip
    from difflab.experiments.inputs import image_batch, single_image
    from difflab.viz.figures import auto_scale
    from difflab.viz.grid import to_pil, to_uint8

    if len(args.images) != 2 or args.real:
        raise ConfigError("fuse needs two images a and b (or {option} N {option:real} FOLDER without images)",
                          option="random_pairs")
    out = Path(args.out)
    lams = args.lam
    strip_path = out if len(lams) > 1 else out.with_name(f"{out.stem}-strip.png")
    for path in {out, strip_path}:
        _refuse_existing(path, args)
    image_a, image_b = (image_batch([single_image(path)], loaded) for path in args.images)
    fused, strip = fuse_strip(loaded, image_a, image_b, lams, settings, args.seed,
                              args.scale or auto_scale(loaded.config.image_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(strip_path)
    if len(lams) == 1:
        to_pil(to_uint8(fused)[0]).save(out)
        print(f"difflab: wrote the fused image {out} (lam={lams[0]:g}) and the strip {strip_path}")
    else:
        print(f"difflab: wrote the strip {out} (lams {', '.join(f'{lam:g}' for lam in lams)})")
    return 0


def run_pairs(args: argparse.Namespace, loaded, settings) -> int:
    from difflab.experiments.fusion_outputs import fuse_pairs
    from difflab.experiments.inputs import random_pairs
    from difflab.experiments.scoring import Scorer, score_lines
    from difflab.generation import prepare_output_folder
    from difflab.metrics.evaluation import is_statistics_file, measure
    from difflab.viz.figures import auto_scale

    if args.images or not args.real:
        raise ConfigError("{option} N needs {option:real} FOLDER and no IMAGE arguments", option="random_pairs")
    if args.random_pairs < 1 or args.batch_size < 1:
        raise ConfigError("{option} and {option:batch_size} must be at least 1", option="random_pairs")
    if len(args.lam) > 1:
        raise ConfigError(f"batch mode ({{option:random_pairs}}) fuses every pair at one {OPTION}; got "
                          f"{len(args.lam)} values (several make a strip of one pair)", option="lam")
    if is_statistics_file(args.real):
        raise ConfigError(f"{OPTION} must be images (a folder or .zip) to pair, not statistics: {args.real}",
                          option="real")
    options = None if args.no_score else scoring_options(args, loaded.device)  # checked before any work
    out = prepare_output_folder(Path(args.out), args.random_pairs, args.format, args.overwrite)
    # The real set is measured first, so a bad --features fails before any fusing. Pairs are drawn from
    # the images that can be read (the scoring core's policy: unreadable ones are skipped and counted).
    scorer = None if options is None else Scorer(args.real, options)
    real = scorer.real if scorer is not None else measure(args.real, progress=not args.no_progress)
    if real.unreadable:
        print(f"difflab: skipped {len(real.unreadable)} unreadable image(s) of {args.real} "
              f"(e.g. {real.unreadable[0][0]}: {real.unreadable[0][1]})")
    pairs = random_pairs(real.used, args.random_pairs, args.seed)
    preview = fuse_pairs(loaded, pairs, args.lam[0], settings, out, args.seed, args.batch_size, args.format,
                         args.scale or auto_scale(loaded.config.image_size), not args.no_progress)
    print(f"difflab: wrote {args.random_pairs} fused images to {out}/1.{args.format} ...; first pairs: {preview}")
    if scorer is None:
        return 0
    scores = scorer.score(str(out))
    (out / "scores.json").write_text(json.dumps({"scoring": scorer.describe(), "scores": scores}, indent=2) + "\n")
    print("\n".join([f"scores of the fused images against {args.real}:"] + score_lines(scores, scorer)))
    return 0


def _refuse_existing(path: Path, args: argparse.Namespace) -> None:
    if path.exists() and not args.overwrite:
        raise ConfigError(f"{OPTION}: {path} exists; pass {{option:overwrite}} to replace it", option="out")
