"""Seconds per training step of MNIST-recipe variants on this CPU: the network's forward,
backward and AdamW step alone, bf16 autocast, 30 timed steps after 5 warm-up steps. It chose the
recipe's width (mnist_quality.CPU_SECONDS_PER_STEP scales these by the full loop's overhead,
0.246 / 0.234 for the 32-channel recipe).

    python benchmarks/cpu_step_time.py '{}' '{"channels": 32}' '{"channels": 16}'   # JSON overrides
"""
from __future__ import annotations

import json
import sys
import time

import torch

from difflab.build import build_network
from difflab.config import TrainConfig
from difflab.recipes import MNIST


def seconds_per_step(overrides: dict, timed_steps: int = 30) -> tuple[int, float]:
    config = TrainConfig(**{**MNIST, "out": "unused", **overrides})
    network = build_network(config, 1)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, foreach=True)
    images = torch.randn(config.batch_size, 1, config.image_size, config.image_size)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t = torch.randint(0, config.timesteps, (config.batch_size,))
            loss = network(images, t.float()).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    started = time.perf_counter()
    for _ in range(timed_steps):
        step()
    return sum(p.numel() for p in network.parameters()), (time.perf_counter() - started) / timed_steps


def main() -> int:
    print(f"{'overrides':<40} {'parameters':>10} {'s/step':>8}  threads {torch.get_num_threads()}")
    for text in sys.argv[1:] or ["{}"]:
        parameters, seconds = seconds_per_step(json.loads(text))
        print(f"{text:<40} {parameters:>10,} {seconds:>8.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
