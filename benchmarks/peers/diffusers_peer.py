#!/usr/bin/env python3
"""Peer benchmark: HuggingFace diffusers' UNet2DModel with DDPMScheduler / DDIMScheduler.

Why this script exists: diffusers is the library most users reach for first, so
difflab's speed is reported next to it, in the same session, on the same device.
The model and training step follow diffusers' own recipe,
examples/unconditional_image_generation/train_unconditional.py:

    UNet2DModel(block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
                down: 4x DownBlock2D, AttnDownBlock2D, DownBlock2D; up: mirrored)
        -> about 114M parameters at 64 px (preset `ddpm-example`)
    DDPMScheduler(num_train_timesteps=1000)  (linear betas, epsilon prediction)
    AdamW(lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8), grad-norm clip 1.0
    EMAModel(decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3/4), stepped every step
    loss = mse(model(noisy, t).sample.float(), noise.float())

Sampling uses the library's pipelines, as a user would: DDIMPipeline (DDIMScheduler
built from the DDPM config, eta 0, 50 steps) or DDPMPipeline (1000 steps), with
output_type="pt".

Smaller networks: the example's 114M-parameter U-Net is far from what runs on
a CPU, so `--preset` / explicit flags build a U-Net of a given size, e.g. one
matching a difflab configuration (`--channels 64 --dim-mults 1,2,4 --res-blocks 2
--attn-resolutions 16` uses difflab's own flag names), or raw diffusers
arguments (`--block-out-channels 32,64,64 --layers-per-block 2 --attn-levels 1`).

Modes (each ends with one `RESULT {json}` line on stdout):
    bench-train  --batch 64 --steps 50 --warmup 10 [--precision bf16|tf32|fp32]
    bench-sample --n 1000 --batch 250 --steps 50 [--sampler ddim|ddpm]
Both take --device auto|cpu|cuda and --threads N (CPU).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

PEER = "diffusers"

# name -> (block_out_channels, layers_per_block, attention levels (0 = full resolution), image size)
PRESETS: dict[str, dict[str, Any]] = {
    # diffusers' examples/unconditional_image_generation/train_unconditional.py
    "ddpm-example": {"block_out_channels": (128, 128, 256, 256, 512, 512), "layers_per_block": 2,
                     "attn_levels": (4,), "image_size": 64},
    # difflab's default network (TrainConfig: channels 64, dim_mults 1,2,4, res_blocks 2, attention at 16 px)
    "difflab-default": {"block_out_channels": (64, 128, 256), "layers_per_block": 2,
                        "attn_resolutions": (16,), "image_size": 64},
    # small enough to time on a shared CPU: 32 px images, attention at 16 px
    "cpu-small": {"block_out_channels": (32, 64, 64), "layers_per_block": 2,
                  "attn_resolutions": (16,), "image_size": 32},
}

TRAIN_RECIPE: dict[str, Any] = {
    "optimizer": {"name": "AdamW", "lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8,
                  "max_grad_norm": 1.0},
    "ema": {"decay": 0.9999, "use_ema_warmup": True, "inv_gamma": 1.0, "power": 0.75},
    "scheduler": {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"},
}


# --------------------------------------------------------------------------------------------
# Network configuration
# --------------------------------------------------------------------------------------------
def parse_ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    text = text.strip()
    return tuple(int(v) for v in text.split(",") if v.strip()) if text else ()


def resolve_network(args: argparse.Namespace) -> dict[str, Any]:
    """Preset, then explicit flags on top. Returns block_out_channels, layers_per_block,
    attn_levels and image_size. Two ways to say where attention goes: level indices
    (diffusers' view: which down/up block is an Attn block) or feature-map sizes
    (difflab's --attn-resolutions)."""
    preset = dict(PRESETS[args.preset])
    image_size = args.image_size or preset["image_size"]

    if args.channels is not None or args.dim_mults is not None:  # difflab-style width
        channels = args.channels or 64
        mults = parse_ints(args.dim_mults) or (1, 2, 4)
        preset["block_out_channels"] = tuple(channels * m for m in mults)
    if args.block_out_channels:
        preset["block_out_channels"] = parse_ints(args.block_out_channels)
    blocks = preset["block_out_channels"]
    layers = args.layers_per_block or args.res_blocks or preset["layers_per_block"]

    if args.attn_levels is not None and args.attn_resolutions is not None:
        raise SystemExit("give --attn-levels or --attn-resolutions, not both")
    if args.attn_levels is not None:
        levels = parse_ints(args.attn_levels)
    elif args.attn_resolutions is not None:
        levels = levels_from_resolutions(parse_ints(args.attn_resolutions), image_size, len(blocks))
    elif "attn_levels" in preset and len(preset["attn_levels"]) and max(preset["attn_levels"]) < len(blocks):
        levels = preset["attn_levels"]
    else:
        levels = levels_from_resolutions(preset.get("attn_resolutions", (16,)), image_size, len(blocks))
    if any(not 0 <= lvl < len(blocks) for lvl in levels):
        raise SystemExit(f"attention levels {levels} outside 0..{len(blocks) - 1}")
    bad = [c for c in blocks if c % args.norm_groups]
    if bad:
        raise SystemExit(f"UNet2DModel uses GroupNorm({args.norm_groups}) everywhere: channels {bad} are not "
                         f"divisible; pass --norm-groups")
    if image_size % 2 ** (len(blocks) - 1):
        raise SystemExit(f"image size {image_size} is not divisible by 2^{len(blocks) - 1} (levels - 1 downsamplings)")
    return {"block_out_channels": tuple(blocks), "layers_per_block": layers, "attn_levels": tuple(levels),
            "image_size": image_size}


def levels_from_resolutions(resolutions: tuple[int, ...], image_size: int, n_levels: int) -> tuple[int, ...]:
    """Level i works at image_size / 2**i pixels (the last level does not downsample)."""
    return tuple(i for i in range(n_levels) if image_size // 2 ** i in resolutions)


def build_unet(net: dict[str, Any], args: argparse.Namespace) -> torch.nn.Module:
    from diffusers import UNet2DModel

    n = len(net["block_out_channels"])
    attn = set(net["attn_levels"])
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if (n - 1 - j) in attn else "UpBlock2D" for j in range(n))
    return UNet2DModel(
        sample_size=net["image_size"],
        in_channels=3,
        out_channels=3,
        layers_per_block=net["layers_per_block"],
        block_out_channels=net["block_out_channels"],
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=args.norm_groups,
        attention_head_dim=args.attention_head_dim,
        add_attention=not args.no_mid_attn,
    )


def describe(unet: torch.nn.Module, net: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import diffusers

    cfg = unet.config
    return {
        "peer": PEER,
        "peer_version": diffusers.__version__,
        "preset": args.preset,
        "config": {
            **net,
            "down_block_types": list(cfg.down_block_types),
            "up_block_types": list(cfg.up_block_types),
            "mid_attention": cfg.add_attention,
            "attention_head_dim": cfg.attention_head_dim,
            "norm_num_groups": cfg.norm_num_groups,
            "precision": args.precision,
            "batch": args.batch,
        },
        "parameters": pc.count_parameters(unet),
    }


# --------------------------------------------------------------------------------------------
# Training step (as train_unconditional.py)
# --------------------------------------------------------------------------------------------
class TrainLoop:
    def __init__(self, unet: torch.nn.Module, device: torch.device, precision: str, ema: str) -> None:
        from diffusers import DDPMScheduler

        opt = TRAIN_RECIPE["optimizer"]
        self.unet = unet
        self.device = device
        self.precision = precision
        self.scheduler = DDPMScheduler(**TRAIN_RECIPE["scheduler"])
        self.opt = torch.optim.AdamW(unet.parameters(), lr=opt["lr"], betas=opt["betas"],
                                     weight_decay=opt["weight_decay"], eps=opt["eps"])
        self.max_grad_norm = opt["max_grad_norm"]
        self.ema_impl = "none"
        self.ema = self._make_ema(ema)

    def _make_ema(self, kind: str) -> Any:
        if kind == "off":
            return None
        # diffusers.training_utils imports transformers/peft when they are installed; if that
        # chain breaks on some machine, fall back to the same update written out here, so
        # that the benchmark still runs (the result records which one was used).
        try:
            from diffusers.training_utils import EMAModel
        except Exception as exc:  # noqa: BLE001
            print(f"note: diffusers.training_utils.EMAModel unavailable ({exc}); using an equivalent EMA",
                  file=sys.stderr)
            self.ema_impl = "fallback"
            return FallbackEMA(self.unet.parameters(), foreach=(kind == "foreach"), **TRAIN_RECIPE["ema"])
        self.ema_impl = "diffusers.training_utils.EMAModel"
        return EMAModel(self.unet.parameters(), foreach=(kind == "foreach"), **TRAIN_RECIPE["ema"])

    def step(self, clean: torch.Tensor) -> torch.Tensor:
        """clean: images in [-1, 1] (the example's Normalize([0.5], [0.5]))."""
        self.unet.train()
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (clean.shape[0],),
                                  device=clean.device).long()
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        with pc.autocast(self.device, self.precision):
            pred = self.unet(noisy, timesteps).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.max_grad_norm)
        self.opt.step()
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


class FallbackEMA:
    """diffusers' EMAModel.step with use_ema_warmup (decay 1 - (1 + step/inv_gamma)^-power,
    capped at `decay`), for machines where diffusers.training_utils cannot be imported."""

    def __init__(self, parameters: Any, decay: float, use_ema_warmup: bool, inv_gamma: float, power: float,
                 foreach: bool = False) -> None:
        self.params = [p for p in parameters]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.warmup, self.inv_gamma, self.power = decay, use_ema_warmup, inv_gamma, power
        self.foreach = foreach
        self.optimization_step = 0

    @torch.no_grad()
    def step(self, parameters: Any = None) -> None:
        self.optimization_step += 1
        step = max(0, self.optimization_step - 1)
        if step <= 0:
            decay = 0.0
        elif self.warmup:
            decay = min(1 - (1 + step / self.inv_gamma) ** -self.power, self.decay)
        else:
            decay = min((1 + step) / (10 + step), self.decay)
        live = [p for p in self.params if p.requires_grad]
        shadow = [s for s, p in zip(self.shadow, self.params) if p.requires_grad]
        if self.foreach:
            torch._foreach_sub_(shadow, torch._foreach_sub(shadow, live), alpha=1 - decay)
        else:
            for s, p in zip(shadow, live):
                s.sub_((1 - decay) * (s - p))


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------
def cmd_bench_train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Training images/s on random images: median of synchronised steps after a warm-up."""
    torch.manual_seed(args.seed)
    net = resolve_network(args)
    unet = build_unet(net, args).to(device)
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    loop = TrainLoop(unet, device, args.precision, args.ema)
    size = net["image_size"]
    images = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    pc.sync(device)
    for _ in range(args.warmup):
        loop.step(images)
    pc.sync(device)
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    pc.reset_peak_memory(device)
    times = pc.time_steps(lambda: loop.step(images), args.steps, 0, device)
    pipelined = pc.time_pipelined(lambda: loop.step(images), args.steps, device)
    return {
        "mode": "bench-train",
        **describe(unet, net, args),
        "recipe": TRAIN_RECIPE,
        "ema": args.ema,
        "ema_impl": loop.ema_impl,
        "channels_last": args.channels_last,
        "steps": args.steps,
        "warmup": args.warmup,
        **pc.step_stats(times, args.batch),
        **pc.pipelined_stats(pipelined, args.batch),
        **pc.memory_report(device, args.batch, baseline),
        **pc.device_info(device),
    }


def make_pipeline(unet: torch.nn.Module, sampler: str) -> Any:
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    train_scheduler = DDPMScheduler(**TRAIN_RECIPE["scheduler"])
    if sampler == "ddim":
        pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(train_scheduler.config))
    else:
        pipe = DDPMPipeline(unet=unet, scheduler=train_scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.inference_mode()
def run_pipeline(pipe: Any, sampler: str, n: int, batch: int, steps: int, device: torch.device,
                 precision: str) -> torch.Tensor:
    out = []
    for size in pc.groups(n, batch):
        kwargs: dict[str, Any] = {"batch_size": size, "num_inference_steps": steps, "output_type": "pt"}
        if sampler == "ddim":
            kwargs["eta"] = 0.0
        with pc.autocast(device, precision):
            images = pipe(**kwargs).images  # (B, 3, H, W) in [0, 1]
        out.append(images.float().cpu())
    return torch.cat(out)


def cmd_bench_sample(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Sampling seconds and images/s (fresh weights: speed does not depend on them), after one
    untimed warm-up batch of the same shape run with `--warmup-steps` steps."""
    if args.sampler == "ddpm" and args.steps != TRAIN_RECIPE["scheduler"]["num_train_timesteps"]:
        print("note: DDPMPipeline with fewer steps than training skips timesteps (not the usual DDPM-1000)",
              file=sys.stderr)
    torch.manual_seed(args.seed)
    net = resolve_network(args)
    unet = build_unet(net, args).to(device).eval()
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    pipe = make_pipeline(unet, args.sampler)

    run_pipeline(pipe, args.sampler, args.batch, args.batch, min(args.warmup_steps, args.steps), device,
                 args.precision)
    pc.reset_peak_memory(device)
    pc.sync(device)
    start = time.perf_counter()
    images = run_pipeline(pipe, args.sampler, args.n, args.batch, args.steps, device, args.precision)
    pc.sync(device)
    seconds = time.perf_counter() - start
    if args.save_grid:
        pc.save_grid(images[:64], args.save_grid)
    return {
        "mode": "bench-sample",
        **describe(unet, net, args),
        "sampler": f"{args.sampler}-{args.steps}",
        "pipeline": type(pipe).__name__,
        "channels_last": args.channels_last,
        "n": len(images),
        "seconds": seconds,
        "images_per_s": len(images) / seconds,
        "network_evaluations": args.steps * len(pc.groups(args.n, args.batch)),
        **pc.memory_report(device, args.batch),
        **pc.device_info(device),
    }


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto", help="auto (GPU if present), cuda or cpu")
    common.add_argument("--threads", type=int, default=0, help="torch.set_num_threads on the CPU (0 = default)")
    common.add_argument("--precision", default=None, choices=("bf16", "tf32", "fp32"),
                        help="default: bf16 autocast on a GPU, fp32 on the CPU (the example's default is fp32)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--channels-last", action="store_true", help="channels-last memory layout")
    net = common.add_argument_group("network (preset first, then these flags on top)")
    net.add_argument("--preset", default="ddpm-example", choices=sorted(PRESETS))
    net.add_argument("--image-size", type=int, default=0, help="0 = the preset's (64, or 32 for cpu-small)")
    net.add_argument("--block-out-channels", help="diffusers' widths per level, e.g. 32,64,64")
    net.add_argument("--layers-per-block", type=int, default=0, help="ResNet blocks per level (0 = preset)")
    net.add_argument("--attn-levels", help="levels (0 = full resolution) whose blocks have attention, e.g. 1 or ''")
    net.add_argument("--channels", type=int, help="difflab-style base width (with --dim-mults)")
    net.add_argument("--dim-mults", help="difflab-style width multipliers, e.g. 1,2,4")
    net.add_argument("--res-blocks", type=int, default=0, help="difflab-style name for --layers-per-block")
    net.add_argument("--attn-resolutions", help="difflab-style: feature-map sizes with attention, e.g. 16")
    net.add_argument("--attention-head-dim", type=int, default=8, help="UNet2DModel default 8")
    net.add_argument("--norm-groups", type=int, default=32, help="UNet2DModel norm_num_groups (default 32)")
    net.add_argument("--no-mid-attn", action="store_true", help="drop the mid block's attention (add_attention)")
    sub = parser.add_subparsers(dest="mode", required=True)

    p = sub.add_parser("bench-train", parents=[common], help="training images/s on random data")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--ema", default="loop", choices=("loop", "foreach", "off"),
                   help="EMAModel update: per-parameter loop (the example's default), foreach, or none")

    p = sub.add_parser("bench-sample", parents=[common], help="sampling seconds and images/s")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"))
    p.add_argument("--warmup-steps", type=int, default=10, help="steps of the untimed warm-up batch")
    p.add_argument("--save-grid", default="", help="also write an 8x8 grid of the samples to this .png")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    pc.set_threads(args.threads)
    device = pc.pick_device(args.device)
    if args.precision is None:
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    pc.set_precision(args.precision, device)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    handlers = {"bench-train": cmd_bench_train, "bench-sample": cmd_bench_sample}
    pc.emit_result(handlers[args.mode](args, device))


if __name__ == "__main__":
    main()
