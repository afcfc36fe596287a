"""`difflab progress RUN -n 5 --frames 10 --out q1.png`: samples shown at evenly spaced
timesteps while they are denoised (rows: samples; columns: timesteps, labelled t)."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.families import require_family
from difflab.cli.sample import add_sampler_options, load_for_generation, resolve_precision, speed_up
from difflab.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "progress", help="figure of samples at several timesteps of the reverse process",
        description="Snapshots of the same samples during one sampling run (taken by the sampler's callback). "
                    "The last column is the finished image. With the same --seed, the samples are the first "
                    "images `difflab sample` makes.")
    parser.add_argument("run", help="run folder made by `difflab train`, or a ckpt-*.safetensors file")
    parser.add_argument("-n", "--num-images", type=int, default=5, help="samples, one per row (default 5)")
    parser.add_argument("--frames", type=int, default=10,
                        help="columns, evenly spaced over the sampler's steps, the finished image last (default 10)")
    parser.add_argument("--at", metavar="T,T,...",
                        help="timesteps to show instead of --frames, e.g. 999,750,500,250,50 (the finished image "
                             "is added); DDIM shows the first step it visits at or below each")
    parser.add_argument("--show-x0", action="store_true", help="under each noisy row, the network's predicted x0")
    parser.add_argument("--out", required=True, help="the PNG figure to write")
    parser.add_argument("--gif", metavar="PATH", help="also write an animated GIF, one frame per column")
    parser.add_argument("--scale", type=int, default=None,
                        help="nearest-neighbour enlargement (default: to at least 64 px per image)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampler_options(parser)
    parser.set_defaults(func=run)


def parse_timesteps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ConfigError(f"--at must be comma-separated integers such as 999,500,100; got {text!r}") from error


def run(args: argparse.Namespace) -> int:
    from difflab.experiments.progress import (evenly_spaced_frames, frames_at_timesteps, progress_animation,
                                              progress_figure, record_progress, visited_timesteps)
    from difflab.generation.fast import network_passes
    from difflab.generation.generate import batch_generator
    from difflab.viz.figures import auto_scale, save_gif

    if args.num_images < 1:
        raise ConfigError(f"-n must be at least 1; got {args.num_images}")
    if args.scale is not None and args.scale < 1:
        raise ConfigError(f"--scale must be at least 1; got {args.scale}")
    loaded = load_for_generation(args)
    require_family(loaded, "diffusion", "progress (frames of the reverse diffusion process)")
    visited = visited_timesteps(loaded.schedule.timesteps, args.sampler, args.steps, args.spacing)
    if args.at:
        frame_indices = frames_at_timesteps(visited, parse_timesteps(args.at))
    else:
        frame_indices = evenly_spaced_frames(len(visited), args.frames)

    precision = resolve_precision(args.precision, loaded.device)
    loaded = speed_up(loaded, args, precision, network_passes(args.num_images, args.num_images, len(visited)))
    generator = batch_generator(args.seed, 0, loaded.device)  # as generate_images seeds its first batch
    noise = torch.randn(args.num_images, *loaded.image_shape(), device=loaded.device, generator=generator)
    progress = record_progress(loaded, noise, frame_indices, args.sampler, args.steps, args.eta, args.spacing,
                               generator, args.clip, precision,
                               progress=not args.no_progress)
    scale = args.scale or auto_scale(loaded.config.image_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    progress_figure(progress, args.show_x0, scale).save(out)
    print(f"difflab: wrote {out} ({args.num_images} samples x {len(progress.labels)} columns: "
          f"{', '.join(progress.labels)})")
    if args.gif:
        save_gif(progress_animation(progress, args.show_x0, scale), args.gif)
        print(f"difflab: wrote {args.gif} ({len(progress.labels)} frames)")
    return 0
