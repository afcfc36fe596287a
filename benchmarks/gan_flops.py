"""Model FLOPs of one StyleGAN2 training step at difflab's defaults, counted by PyTorch's
FlopCounterMode on the CPU (matrix products and convolutions, forward and backward, R1's double
backward included), per training image: a step with R1 and a step without, weighted by the lazy
interval (R1 every r1_interval steps). Divide images/s x FLOPs per image by the GPU's measured
bf16 matrix rate for the MFU (issue 17).

    python benchmarks/gan_flops.py                 # 64 px, the defaults
    python benchmarks/gan_flops.py --image-size 32
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from difflab.families import make_config
from difflab.families.base import StepContext
from difflab.families.stylegan2 import StyleGAN2Trainer


def step_flops(trainer: StyleGAN2Trainer, images: torch.Tensor, step: int) -> int:
    context = StepContext(step=step, run_seconds=0.0, generator=torch.Generator().manual_seed(step),
                          autocast=nullcontext, backward=lambda loss: loss.backward(),
                          no_sync=lambda module: nullcontext(), clip_grad_norm=lambda p, n: None)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(images, context)
    return counter.get_total_flops()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="images per counted step (FLOPs scale linearly)")
    args = parser.parse_args()
    config = make_config({"model": "stylegan2", "data": "x", "out": "y", "image_size": args.image_size,
                          "batch_size": args.batch, "compile": "off"}).validate()
    trainer = StyleGAN2Trainer(config, 3, torch.device("cpu"))
    trainer.prepare(lambda *modules: modules, torch.zeros(args.batch, 3, args.image_size, args.image_size), False)
    images = torch.rand(args.batch, 3, args.image_size, args.image_size) * 2 - 1
    with_r1 = step_flops(trainer, images, 0)  # step 0 runs R1 (step % r1_interval == 0)
    plain = step_flops(trainer, images, 1)
    interval = config.r1_interval
    per_image = ((with_r1 + (interval - 1) * plain) / interval) / args.batch
    g = sum(p.numel() for p in trainer.G.parameters())
    d = sum(p.numel() for p in trainer.D.parameters())
    print(f"StyleGAN2 {args.image_size}px: G {g / 1e6:.2f}M, D {d / 1e6:.2f}M parameters; per image: "
          f"{plain / args.batch / 1e9:.2f} GFLOP (plain step), {with_r1 / args.batch / 1e9:.2f} GFLOP (with R1), "
          f"{per_image / 1e9:.2f} GFLOP on average (R1 every {interval} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
