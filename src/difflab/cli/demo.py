"""`difflab demo`: the whole pipeline on a built-in procedural dataset, offline, on a CPU, in minutes."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from difflab.cli.flags import add_alias
from difflab.config import TrainConfig

from difflab.recipes import DEMO


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train and sample a small model on built-in shapes (offline, CPU)")
    parser.add_argument("--out", default="difflab-demo", help="run folder (default ./difflab-demo)")
    parser.add_argument("--max-minutes", type=float, default=DEMO["max_minutes"],
                        help=f"training time budget in minutes (default {DEMO['max_minutes']})")
    add_alias(parser, "--minutes", "--max-minutes")
    parser.add_argument("--steps", type=int, default=DEMO["steps"], help=f"at most this many steps (default {DEMO['steps']})")
    parser.add_argument("--mixed-precision", choices=("auto", "no", "bf16"), default="auto",
                        help="auto (default): bf16 on CPUs with AMX or AVX-512 BF16, else fp32; no forces fp32")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous demo in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.cli.train import check_out_folder
    from difflab.generation import generate_images, load_model, prepare_output_folder, write_numbered_images
    from difflab.training import train
    from difflab.viz.grid import save_grid

    from difflab.training.speed import cpu_bf16_capability, describe_precision_choice

    config = TrainConfig.from_dict({**DEMO, "out": args.out, "max_minutes": args.max_minutes, "steps": args.steps,
                                    "save_every": min(DEMO["save_every"], args.steps),
                                    "mixed_precision": args.mixed_precision}).validate()
    check_out_folder(config, resume=False, overwrite=args.overwrite)
    precision, why = describe_precision_choice(config.mixed_precision, torch.device("cpu"))
    print(f"difflab demo: training path {'bf16 autocast' if precision == 'bf16' else 'fp32'}: {why} "
          f"(bf16 units: {cpu_bf16_capability()}).")
    print(f"difflab demo: training a {config.channels}-channel U-Net on procedural shapes ({config.image_size}px) "
          f"for {config.max_minutes:g} minutes on the CPU, the learning rate decaying to zero over them "
          f"(at most {config.steps} steps) ...")
    started = time.perf_counter()
    result = train(config)
    loaded = load_model(result.run_dir, device="cpu")
    samples = prepare_output_folder(Path(args.out) / "samples-ddim50", 64, "png", overwrite=args.overwrite)
    _, images = next(generate_images(loaded, 64, batch_size=64, sampler="ddim", steps=50, seed=1))
    write_numbered_images(samples, 0, images, "png")
    grid = save_grid(images, Path(args.out) / "demo-grid.png", columns=8)
    minutes = (time.perf_counter() - started) / 60
    print(f"\ndifflab demo: done in {minutes:.1f} min ({result.step} training steps, {precision}). Wrote:")
    print(f"  {grid}                    64 DDIM-50 samples from the EMA weights")
    print(f"  {samples}/1.png ... 64.png")
    print(f"  {result.run_dir / 'loss.png'}            loss curve")
    print(f"  {result.run_dir / 'samples'}/            grids during training")
    print(f"  {result.checkpoint}")
    print(f"Next: difflab sample {args.out} -n 16 --out my-samples   (see README for your own images)")
    return 0
