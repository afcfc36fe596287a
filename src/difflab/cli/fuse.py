"""`difflab fuse RUN a.jpg b.jpg --lam 0.5 --t 500 --out fused.png`: fuse two images.

    difflab fuse RUN a.jpg b.jpg --lam 0.5 --t 500 --out fused.png          # the homework's method
    difflab fuse RUN a.jpg b.jpg --method ddim-slerp --lams 0,0.25,0.5,0.75,1 --out strip.png
    difflab fuse RUN --pairs 50 --from ./faces --out fused/                  # random pairs, then scored
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.sample import add_sampler_options, load_for_generation, resolve_precision, speed_up
from difflab.cli.scoring_options import add_scoring_options, scoring_options
from difflab.errors import ConfigError
from difflab.families import require_family

METHOD_HELP = ("noise-mix (default, the homework): noise both images to --t with q_sample, mix with weight "
               "lambda, denoise from --t; ddim-slerp: DDIM-invert both, slerp the latents, DDIM-decode")


def register(subparsers: argparse._SubParsersAction) -> None:
    from difflab.experiments.fusion import METHODS, NOISE_MODES

    parser = subparsers.add_parser(
        "fuse", help="fuse two images (or random pairs from a folder) with a trained model",
        description="Fuse image a with image b. With one --lam, --out is the fused image and a strip "
                    "[a, fused, b] goes beside it; with --lams, --out is the strip. With --pairs N --from FOLDER, "
                    "--out is a folder of N fused images, which are then scored against FOLDER.")
    parser.add_argument("run", help="run folder made by `difflab train`, or a ckpt-*.safetensors file")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="the two images a and b")
    parser.add_argument("--method", choices=METHODS, default="noise-mix", help=METHOD_HELP)
    parser.add_argument("--lam", type=float, default=0.5, help="weight of b: 0 gives a, 1 gives b (default 0.5)")
    parser.add_argument("--lams", metavar="L,L,...", help="several weights, e.g. 0,0.25,0.5,0.75,1: a strip")
    parser.add_argument("--t", type=int, default=None,
                        help="noise-mix: the timestep both images are noised to and denoised from (default T/2)")
    parser.add_argument("--noise", choices=NOISE_MODES, default="shared",
                        help="noise-mix: one noise for both images (default; the mixture then has exactly the "
                             "noise level of --t) or independent noises (the mix has less noise than --t implies)")
    parser.add_argument("--seeds", metavar="A,B", default=None,
                        help="GAN runs: interpolate between the faces of seeds A and B in W space (a GAN has no "
                             "encoder to map given images into its latent space); with --lams for the strip")
    parser.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                        help="GAN runs, with --seeds: truncation psi of both ends (default 1 = none)")
    parser.add_argument("--pairs", type=int, default=None, help="batch mode: fuse this many random pairs")
    parser.add_argument("--from", dest="source", metavar="FOLDER", help="batch mode: images (folder or .zip)")
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


def parse_lams(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ConfigError(f"--lams must be comma-separated numbers such as 0,0.5,1; got {text!r}") from error


def run(args: argparse.Namespace) -> int:
    from difflab.experiments.fusion import FusionSettings

    loaded = load_for_generation(args)
    if args.seeds is not None:
        return run_seeds(args, loaded)
    require_family(loaded, "diffusion", "fuse with images (noise, mix, denoise)",
                   hint="A GAN has no encoder to map your images into its latent space; it interpolates between "
                        "two generated faces in W space instead: difflab fuse RUN --seeds A,B --lams 0,0.25,0.5,0.75,1 "
                        "--out strip.png")
    precision = resolve_precision(args.precision, loaded.device)
    loaded = speed_up(loaded, args, precision, 0)  # few passes: never worth a compile under auto
    settings = FusionSettings(args.method, args.t, args.noise, args.sampler, args.steps, args.eta, args.spacing,
                              args.clip, precision)
    settings.check()
    if args.pairs is not None:
        return run_pairs(args, loaded, settings)
    return run_single(args, loaded, settings)


def run_seeds(args: argparse.Namespace, loaded) -> int:
    """`--seeds A,B`: the strip between two generated images, by the generator's own latent
    interpolation (a GAN's: a straight line in W; ImageGenerator.interpolate_seeds)."""
    from difflab.viz.figures import auto_scale, labelled_grid

    if args.images or args.pairs is not None:
        raise ConfigError("--seeds A,B interpolates between two generated images: give no IMAGE arguments or --pairs")
    interpolate = getattr(loaded, "interpolate_seeds", None)
    if interpolate is None:
        raise ConfigError(f"--seeds: a {loaded.family} run has no latent interpolation here; fuse two images instead")
    try:
        seed_a, seed_b = (int(part) for part in args.seeds.split(","))
    except ValueError:
        raise ConfigError(f"--seeds must be two integers A,B such as 3,17; got {args.seeds!r}") from None
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out: {out} exists; pass --overwrite to replace it")
    lams = parse_lams(args.lams) if args.lams else [0.0, args.lam, 1.0]
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

    if len(args.images) != 2 or args.source:
        raise ConfigError("fuse needs two images a and b (or --pairs N --from FOLDER without images)")
    out = Path(args.out)
    strip_path = out if args.lams else out.with_name(f"{out.stem}-strip.png")
    for path in {out, strip_path}:
        if path.exists() and not args.overwrite:
            raise ConfigError(f"--out: {path} exists; pass --overwrite to replace it")
    lams = parse_lams(args.lams) if args.lams else [args.lam]
    image_a, image_b = (image_batch([single_image(path)], loaded) for path in args.images)
    fused, strip = fuse_strip(loaded, image_a, image_b, lams, settings, args.seed,
                              args.scale or auto_scale(loaded.config.image_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(strip_path)
    if not args.lams:
        to_pil(to_uint8(fused)[0]).save(out)
        print(f"difflab: wrote the fused image {out} (lam={args.lam:g}) and the strip {strip_path}")
    else:
        print(f"difflab: wrote the strip {out} (lams {', '.join(f'{lam:g}' for lam in lams)})")
    return 0


def run_pairs(args: argparse.Namespace, loaded, settings) -> int:
    from difflab.data import list_images
    from difflab.experiments.fusion_outputs import fuse_pairs
    from difflab.experiments.inputs import random_pairs
    from difflab.experiments.scoring import Scorer, score_lines
    from difflab.generation import prepare_output_folder
    from difflab.viz.figures import auto_scale

    if args.images or not args.source:
        raise ConfigError("--pairs N needs --from FOLDER and no IMAGE arguments")
    if args.pairs < 1 or args.batch_size < 1:
        raise ConfigError("--pairs and --batch-size must be at least 1")
    if args.lams:
        raise ConfigError("--lams makes a strip of one pair; batch mode (--pairs) takes one --lam")
    out = prepare_output_folder(Path(args.out), args.pairs, args.format, args.overwrite)
    pairs = random_pairs(list_images(args.source), args.pairs, args.seed)
    # The real set is measured first, so a bad --features fails before any fusing.
    scorer = None if args.no_score else Scorer(args.source, scoring_options(args, loaded.device))
    preview = fuse_pairs(loaded, pairs, args.lam, settings, out, args.seed, args.batch_size, args.format,
                         args.scale or auto_scale(loaded.config.image_size), not args.no_progress)
    print(f"difflab: wrote {args.pairs} fused images to {out}/1.{args.format} ...; first pairs: {preview}")
    if scorer is None:
        return 0
    scores = scorer.score(str(out))
    (out / "scores.json").write_text(json.dumps({"scoring": scorer.describe(), "scores": scores}, indent=2) + "\n")
    print("\n".join([f"scores of the fused images against {args.source}:"] + score_lines(scores, scorer)))
    return 0
