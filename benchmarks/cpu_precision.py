"""Seconds per training step on this CPU in fp32 and in bf16 autocast (oneDNN), for the MNIST and
demo recipes: the real diffusion loss, backward and AdamW step, 5 warm-up steps, then the median of
`--repeats` timed blocks of `--steps` steps. Prints the CPU model and which bf16 units it has, so a
row can be read as "AMX" or "AVX-512-BF16 only" (issue 13).

    python benchmarks/cpu_precision.py                     # both recipes, both precisions
    python benchmarks/cpu_precision.py --recipes mnist --steps 20 --repeats 3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from difflab.build import build_loss, build_network, build_schedule
from difflab.config import TrainConfig
from difflab.recipes import RECIPES
from difflab.training.speed import cpu_bf16_capability


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def seconds_per_step(recipe: dict, precision: str, steps: int, repeats: int) -> float:
    torch.manual_seed(0)
    config = TrainConfig(**{**recipe, "out": "unused"})
    channels = int(config.image_channels) if config.image_channels != "auto" else 3
    network = build_network(config, channels)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, foreach=True)
    loss_fn = build_loss(config, build_schedule(config))
    images = torch.rand(config.batch_size, channels, config.image_size, config.image_size) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            loss = loss_fn(network, images, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    blocks = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        blocks.append((time.perf_counter() - started) / steps)
    return statistics.median(blocks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="mnist,demo", help="comma-separated names from difflab.recipes.RECIPES")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the median is reported")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; bf16 units: {cpu_bf16_capability()}; threads {torch.get_num_threads()}; "
          f"torch {torch.__version__}")
    print(f"{'recipe':<8} {'fp32 s/step':>12} {'bf16 s/step':>12} {'bf16 speed-up':>14}")
    for name in args.recipes.split(","):
        fp32 = seconds_per_step(RECIPES[name], "no", args.steps, args.repeats)
        bf16 = seconds_per_step(RECIPES[name], "bf16", args.steps, args.repeats)
        print(f"{name:<8} {fp32:>12.4f} {bf16:>12.4f} {fp32 / bf16:>13.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
