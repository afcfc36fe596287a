"""`difflab sample RUN -n N --sampler ddim|ddpm|dpmpp-2m --out DIR`: numbered images plus a preview grid."""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from difflab.cli.flags import add_alias
from difflab.config import RunOptions, declaration
from difflab.diffusion import CLIPPING
from difflab.errors import ConfigError, DataError
from difflab.generation.guide import AUTO_GUIDE_FRACTION, DEFAULT_GUIDANCE, GUIDE_MIN_T_SHARE
from difflab.generation.fast import COMPILE_AUTO_MIN_PASSES, SWITCH, resolve_sampling_speed
from difflab.samplers import DEFAULT_SAMPLER, SAMPLERS, SPACINGS, sampler_names

MANIFEST = "difflab-sample.json"  # lists the preview files, so evaluation skips them


def add_sampler_options(parser: argparse.ArgumentParser, default_sampler: str | None = DEFAULT_SAMPLER,
                        sampler_help: str = f"default: {DEFAULT_SAMPLER}") -> None:
    """Options shared by every command that samples with one sampler (sample, progress, fuse);
    the choices and their help come from the sampler registry (difflab.samplers.SAMPLERS)."""
    parser.add_argument("--sampler", choices=sampler_names(), default=default_sampler,
                        help=f"{sampler_help}; " + "; ".join(f"{e.name} = {e.help}" for e in SAMPLERS.values()))
    parser.add_argument("--steps", type=positive_int, default=None, help=steps_help())
    with_eta = [e for e in SAMPLERS.values() if e.eta is not None]
    parser.add_argument("--eta", type=finite_non_negative, default=0.0,
                        help=f"noise of {' and '.join(e.name for e in with_eta)}: "
                             f"{'; '.join(sorted({e.eta for e in with_eta}))} (default 0)")
    add_generation_options(parser)


def steps_defaults() -> str:
    """Each sampler's default steps, for help texts: "all of the model's timesteps for ddpm, 50 for ddim, ..."."""
    every = "all of the model's timesteps"
    return ", ".join(f"{e.default_steps or every} for {e.name}" for e in SAMPLERS.values())


def steps_help() -> str:
    return (f"network evaluations per image (default: {steps_defaults()}); fewer than the model's timesteps "
            "visit a subsequence of them (--spacing; DDPM is then respaced)")


def add_generation_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Options of every command that generates images, whatever the sampler (also compare)."""
    parser.add_argument("--spacing", choices=SPACINGS, default="uniform",
                        help="how --steps below the model's timesteps are spread over them (default uniform)")
    parser.add_argument("--clip", choices=CLIPPING, default=None, help="x0 clipping (default: the run's --clip)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--weights", choices=("ema", "model", "best"), default="ema",
                        help="EMA (default), raw weights, or best: the EMA weights of the best-scoring checkpoint "
                             "(train --keep-best)")
    parser.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--mixed-precision", dest="precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                        help="autocast (default auto = bf16 on GPUs and on CPUs with AMX or AVX-512 BF16, else fp32); on a GPU, bf16/fp16 "
                             "run a bf16/fp16 copy of the weights")
    add_alias(parser, "--precision", "--mixed-precision")  # sample's name before issue 19
    parser.add_argument("--compile", choices=SWITCH, default="auto",
                        help="torch.compile the network (auto: on a GPU when the job runs >= "
                             f"{COMPILE_AUTO_MIN_PASSES} batched passes, e.g. DDPM; eager fallback)")
    parser.add_argument("--cuda-graphs", choices=SWITCH, default="auto",
                        help="replay each batch shape's forward pass as a CUDA graph (auto: on a GPU)")
    parser.add_argument("--compile-cache", default="auto", metavar="auto|off|DIR",
                        help=declaration("compile_cache", RunOptions)["help"] + " (as train's; default auto)")
    parser.add_argument("--guide", metavar="CKPT|auto", default=None,
                        help="autoguidance (Karras et al. 2024): steer away from a weaker checkpoint of the same "
                             f"model; auto = the run's checkpoint nearest {AUTO_GUIDE_FRACTION * 100:.0f}%% of the steps. "
                             "Each step then runs both networks")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"autoguidance weight, with --guide (default {DEFAULT_GUIDANCE}; 1 = none)")
    parser.add_argument("--guide-fraction", type=float, default=None,
                        help="with --guide auto: take the checkpoint nearest this share of the model's steps "
                             f"(default {AUTO_GUIDE_FRACTION})")
    parser.add_argument("--guide-min-t", type=int, default=None, metavar="T",
                        help="with --guide: no guidance at timesteps below this, where it only amplifies noise "
                             f"(default {GUIDE_MIN_T_SHARE:g} x the model's --timesteps, e.g. 100 of 1000; 0 = guide every step)")


def load_for_generation(args: argparse.Namespace):
    """The model that --run, --weights, --device, --guide and --guidance describe: any family's
    generator (difflab.families.load_generator); autoguidance needs a diffusion model."""
    from difflab.families import load_generator, require_family
    from difflab.generation.guide import check_guide_fraction, check_guide_min_t, with_autoguidance
    if args.guidance is not None and not args.guide:
        raise ConfigError("--guidance needs --guide (a checkpoint file, or auto)")
    if args.guide_fraction is not None and args.guide != "auto":
        raise ConfigError("--guide-fraction needs --guide auto (it picks the run's checkpoint nearest that share "
                          "of the steps)")
    if args.guide_min_t is not None and not args.guide:
        raise ConfigError("--guide-min-t needs --guide (a checkpoint file, or auto)")
    if args.guide_fraction is not None:
        check_guide_fraction(args.guide_fraction)  # before any model is read
    if args.guide_min_t is not None:
        check_guide_min_t(args.guide_min_t)
    loaded = load_generator(args.run, device=args.device, weights=args.weights)
    if args.guide:
        require_family(loaded, "diffusion", "--guide (autoguidance)")
        loaded = with_autoguidance(loaded, args.guide, args.guidance or DEFAULT_GUIDANCE, args.weights,
                                   args.guide_fraction or AUTO_GUIDE_FRACTION, args.guide_min_t)
    return loaded


def sampling_options(args: argparse.Namespace) -> dict:
    """The family-specific sampling options as keywords for ImageGenerator.generate/describe:
    each family takes those it knows and refuses the others' when they are set."""
    return {"sampler": args.sampler, "steps": args.steps, "eta": args.eta, "spacing": args.spacing,
            "clip": args.clip, "truncation": getattr(args, "truncation", None)}


def resolve_precision(precision: str, device: torch.device) -> str:
    from difflab.training.speed import resolve_mixed_precision
    return resolve_mixed_precision(precision, device)


def speed_up(loaded, args: argparse.Namespace, precision: str, passes: int):
    """`loaded` (any family's generator) with the fast paths that --mixed-precision, --compile and
    --cuda-graphs switch on."""
    return loaded.accelerated(resolve_sampling_speed(loaded.device, precision, args.compile, args.cuda_graphs, passes,
                                                     args.compile_cache))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sample", help="generate images from a trained run",
                                   description="Generate N images as 1.jpg ... N.jpg plus grid.png.")
    parser.add_argument("run", help="run folder made by `difflab train`, or a ckpt-*.safetensors file")
    parser.add_argument("-n", "--num-images", type=int, default=1000, help="how many images (default 1000)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=250, help="images per sampling batch (default 250)")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image file format (default jpg)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampler_options(parser, default_sampler=None, sampler_help="diffusion runs; default: ddim")
    parser.add_argument("--truncation", type=float, default=None, metavar="PSI",
                        help="GAN runs only: the truncation psi of StyleGAN2 (default 1 = none, the honest setting "
                             "for metrics; 0.75 trades diversity for typical-looking images)")
    parser.add_argument("--passes", type=int, default=None, metavar="K",
                        help="denoiser runs only: passes from noise per image (default: the run's --sample-passes)")
    add_warm_start_options(parser.add_argument_group("warm start (a truncated reverse process: SDEdit, ES-DDPM, "
                                                     "TDPM; diffusion runs)"))
    parser.set_defaults(func=run)


def add_warm_start_options(group) -> None:
    group.add_argument("--warm-start", metavar="RUN|FOLDER", default=None,
                       help="start from a prior's estimate of the image: a denoiser run (--model denoiser), a GAN run "
                            "(a sample at psi 1) or an image folder/.zip (SDEdit image-to-image, resized to the "
                            "model's size), noised to --start-t with q_sample")
    group.add_argument("--warm-passes", type=int, default=None, metavar="K",
                       help="with a denoiser --warm-start: its passes from noise (a pass: x <- clamp(D(x), -1, 1); "
                            "0 = the noise itself; default: the denoiser run's --sample-passes)")
    group.add_argument("--start-t", type=int, default=None, metavar="T0",
                       help="the step the estimate is noised to and the sampler starts from, 0 ... T-1 (needed with "
                            "--warm-start); --steps then spread over T0 ... 0 (default: the sampler's, at most T0 + 1)")


def apply_warm_start(loaded, args: argparse.Namespace):
    """`loaded` wrapped to start from --warm-start's estimate at --start-t (generation/warm_start.py),
    when any warm-start option is given; checked before any sampling."""
    from difflab.families import require_family
    from difflab.generation.warm_start import with_warm_start
    if args.warm_start is None and args.start_t is None and args.warm_passes is None:
        return loaded
    require_family(loaded, "diffusion", "--warm-start / --start-t")
    return with_warm_start(loaded, args.warm_start, args.start_t, args.warm_passes)


def run(args: argparse.Namespace) -> int:
    from difflab.generation import prepare_output_folder, write_numbered_images
    from difflab.generation.outputs import save_grid_atomically, write_manifest

    if args.num_images <= 0:
        raise ConfigError(f"-n must be positive; got {args.num_images}")
    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive; got {args.batch_size}")
    loaded = apply_warm_start(load_for_generation(args), args)
    check_finite_weights(loaded)
    options = sampling_options(args)
    if args.passes is not None:
        if loaded.family != "denoiser":
            raise ConfigError("--passes applies to denoiser runs (the passes of a warm-start denoiser prior are "
                              "--warm-passes)")
        options["passes"] = args.passes
    label = loaded.describe(**options)  # also rejects options of another family
    out = prepare_output_folder(Path(args.out), args.num_images, args.format, args.overwrite)
    precision = resolve_precision(args.precision, loaded.device)
    if loaded.guidance:
        label += (f", guided by step {loaded.guidance['guide_step']} at weight {loaded.guidance['weight']:g} "
                  f"from t = {loaded.guidance['min_t']} up")
    loaded = speed_up(loaded, args, precision, loaded.network_passes(args.num_images, args.batch_size, **options))
    preview: list[torch.Tensor] = []
    written: list[str] = []  # the manifest's list of images: evaluation measures exactly these
    started = time.perf_counter()
    try:
        with tqdm(total=args.num_images, desc=f"sampling {label}", unit="img", disable=args.no_progress) as bar:
            for first, images in loaded.generate(args.num_images, args.batch_size, args.seed, precision, **options):
                check_not_blank(images, first)
                write_numbered_images(out, first, images, args.format, written=written)
                preview.extend(images[: max(0, 64 - len(preview))])
                bar.update(len(images))
        seconds = time.perf_counter() - started
        save_grid_atomically(torch.stack(preview), out / "grid.png")
    except (OSError, DataError) as error:
        partial = {"run": str(loaded.checkpoint), "family": getattr(loaded, "family", None), "step": loaded.step,
                   "sampler": label, "seed": args.seed, "num_images": args.num_images, "format": args.format}
        raise DataError(_partial_report(out, partial, written, error)) from None
    manifest = {"previews": ["grid.png"], "run": str(loaded.checkpoint), "family": loaded.family, "step": loaded.step,
                "sampler": label, "eta": args.eta, "truncation": options["truncation"] or 1.0, "seed": args.seed,
                "num_images": args.num_images, "seconds": round(seconds, 3),
                "images_per_second": round(args.num_images / seconds, 2), "device": str(loaded.device),
                "precision": precision, "speed": loaded.speed.describe() if loaded.speed else "plain",
                "weights": args.weights, "guidance": loaded.guidance,
                "warm_start": loaded.record() if hasattr(loaded, "record") else None,
                "format": args.format, "images": written, "complete": True}
    write_manifest(out, manifest)
    print(f"difflab: wrote {args.num_images} images ({label}, {seconds:.1f} s, "
          f"{args.num_images / seconds:.1f} img/s) to {out}/1.{args.format} ... "
          f"{args.num_images}.{args.format}; preview grid: {out / 'grid.png'}")
    return 0


# ---- checks that turn silent wrong values into messages ----------------------------------------

def positive_int(text: str) -> int:
    """argparse type: a whole number > 0 (`--steps 0` must not silently mean the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def finite_non_negative(text: str) -> float:
    """argparse type: a finite number >= 0 (`--eta nan` must not give black images)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def check_finite_weights(loaded) -> None:
    """DataError when the loaded weights hold NaN or infinity (a diverged run's checkpoint)."""
    network = getattr(loaded, "network", None)
    if not isinstance(network, torch.nn.Module):
        return
    bad = [name for name, tensor in network.state_dict().items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise DataError(f"{loaded.checkpoint} holds NaN or infinite weights ({', '.join(bad[:3])}"
                        f"{' ...' if len(bad) > 3 else ''}): the run diverged before it was saved; sample an "
                        "earlier checkpoint (ckpt-*.safetensors) instead")


def check_not_blank(images: torch.Tensor, first: int) -> None:
    """A batch that is entirely 0 (black) is what NaN outputs become in uint8: fail instead of
    writing black images. (Non-finite values are best caught before the uint8 conversion, in
    generation; this is the backstop on what reaches the files.)"""
    if images.numel() and not bool(images.any()):
        raise DataError(f"images {first + 1} ... {first + len(images)} came out entirely black, which is what NaN "
                        "outputs become; the checkpoint or the sampler settings produce non-finite values "
                        "(try --mixed-precision no, or an earlier checkpoint)")


def _partial_report(out: Path, manifest: dict, written: list[str], error: Exception) -> str:
    """Record what was written before `error` (a manifest marked incomplete, if the disk allows)
    and say so in one line."""
    from difflab.generation.outputs import write_manifest

    manifest = {**manifest, "previews": [], "images": written, "complete": False, "error": str(error)}
    try:
        write_manifest(out, manifest)
        recorded = f"; {MANIFEST} lists them and is marked incomplete"
    except OSError:
        recorded = f"; {MANIFEST} could not be written either"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
    kept = (f"{len(written)} complete image(s) were kept ({written[0]} ... {written[-1]})" if written
            else "no image was written")
    return f"sampling stopped: {reason}{where}. {kept}, no partial file{recorded}"
