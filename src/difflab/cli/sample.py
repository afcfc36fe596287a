"""`difflab sample RUN -n N --sampler ddim|ddpm|dpmpp-2m --out DIR`: numbered images plus a preview grid."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from difflab.diffusion import CLIPPING
from difflab.errors import ConfigError
from difflab.generation.generate import SAMPLER_NAMES, sampler_label, sampler_steps
from difflab.generation.guide import AUTO_GUIDE_FRACTION, DEFAULT_GUIDANCE, GUIDE_MIN_T_SHARE
from difflab.generation.fast import COMPILE_AUTO_MIN_PASSES, SWITCH, network_passes, resolve_sampling_speed
from difflab.samplers.ddim import SPACINGS

MANIFEST = "difflab-sample.json"  # lists the preview files, so evaluation skips them


def add_sampler_options(parser: argparse.ArgumentParser, default_sampler: str | None = "ddim",
                        sampler_help: str = "default: ddim") -> None:
    """Options shared by every command that samples with one sampler (sample, progress, fuse)."""
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, default=default_sampler,
                        help=f"{sampler_help}; dpmpp-2m = DPM-Solver++(2M), second order, for few steps")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of ddim (default 50) or dpmpp-2m (default 20); DDPM always runs all of the "
                             "model's timesteps")
    parser.add_argument("--eta", type=float, default=0.0,
                        help="noise of ddim and dpmpp-2m: 0 deterministic, 1 DDPM-like (default 0)")
    add_generation_options(parser)


def add_generation_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Options of every command that generates images, whatever the sampler (also compare)."""
    parser.add_argument("--spacing", choices=SPACINGS, default="uniform",
                        help="timestep spacing of ddim and dpmpp-2m (default uniform)")
    parser.add_argument("--clip", choices=CLIPPING, default=None, help="x0 clipping (default: the run's --clip)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    parser.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
                        help="autocast (default auto = bf16 on GPUs and AMX CPUs, else fp32); on a GPU, bf16/fp16 "
                             "run a bf16/fp16 copy of the weights")
    parser.add_argument("--compile", choices=SWITCH, default="auto",
                        help="torch.compile the network (auto: on a GPU when the job runs >= "
                             f"{COMPILE_AUTO_MIN_PASSES} batched passes, e.g. DDPM; eager fallback)")
    parser.add_argument("--cuda-graphs", choices=SWITCH, default="auto",
                        help="replay each batch shape's forward pass as a CUDA graph (auto: on a GPU)")
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


def load_for_generation(args: argparse.Namespace) -> "LoadedModel":
    """The model that --run, --weights, --device, --guide and --guidance describe."""
    from difflab.generation import load_model
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
    loaded = load_model(args.run, device=args.device, weights=args.weights)
    if args.guide:
        loaded = with_autoguidance(loaded, args.guide, args.guidance or DEFAULT_GUIDANCE, args.weights,
                                   args.guide_fraction or AUTO_GUIDE_FRACTION, args.guide_min_t)
    return loaded


def resolve_precision(precision: str, device: torch.device) -> str:
    from difflab.training.speed import resolve_mixed_precision
    return resolve_mixed_precision(precision, device)


def speed_up(loaded: "LoadedModel", args: argparse.Namespace, precision: str, passes: int) -> "LoadedModel":
    """`loaded` with the fast paths that --precision, --compile and --cuda-graphs switch on."""
    return loaded.accelerated(resolve_sampling_speed(loaded.device, precision, args.compile, args.cuda_graphs, passes))


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
    add_sampler_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.generation import generate_images, prepare_output_folder, write_numbered_images
    from difflab.viz.grid import save_grid

    loaded = load_for_generation(args)
    out = prepare_output_folder(Path(args.out), args.num_images, args.format, args.overwrite)
    precision = resolve_precision(args.precision, loaded.device)
    label = sampler_label(args.sampler, args.steps, loaded.schedule.timesteps)
    if loaded.guidance:
        label += (f", guided by step {loaded.guidance['guide_step']} at weight {loaded.guidance['weight']:g} "
                  f"from t = {loaded.guidance['min_t']} up")
    passes = network_passes(args.num_images, args.batch_size, sampler_steps(args.sampler, args.steps,
                                                                              loaded.schedule.timesteps))
    loaded = speed_up(loaded, args, precision, passes)
    preview: list[torch.Tensor] = []
    started = time.perf_counter()
    with tqdm(total=args.num_images, desc=f"sampling {label}", unit="img", disable=args.no_progress) as bar:
        for first, images in generate_images(loaded, args.num_images, args.batch_size, args.sampler, args.steps,
                                              args.eta, args.seed, precision, args.spacing, args.clip):
            write_numbered_images(out, first, images, args.format)
            preview.extend(images[: max(0, 64 - len(preview))])
            bar.update(len(images))
    seconds = time.perf_counter() - started
    save_grid(torch.stack(preview), out / "grid.png")
    manifest = {"previews": ["grid.png"], "run": str(loaded.checkpoint), "step": loaded.step, "sampler": label,
                "eta": args.eta, "seed": args.seed, "num_images": args.num_images, "seconds": round(seconds, 3),
                "images_per_second": round(args.num_images / seconds, 2), "device": str(loaded.device),
                "precision": precision, "speed": loaded.speed.describe(), "weights": args.weights,
                "guidance": loaded.guidance}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"difflab: wrote {args.num_images} images ({label}, {seconds:.1f} s, "
          f"{args.num_images / seconds:.1f} img/s) to {out}/1.{args.format} ... "
          f"{args.num_images}.{args.format}; preview grid: {out / 'grid.png'}")
    return 0
