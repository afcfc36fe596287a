#!/usr/bin/env python3
"""Sampling speed of difflab next to a peer, in one invocation, on the same device.

Why: issue 5's targets are images/s of DDIM-50 for 1,000 images (at least 3x, goal 5x the
peer), DDPM-1000 for 1,000 images in under 60 s, and on the 2-core CPU at least 1.5x
diffusers' DDIMPipeline at matching size. This script runs the path a user runs,
`difflab.generation.generate_images` (per-batch seeded noise, the sampler, autocast per
precision, uint8 images back on the host), on a network with fresh random weights (speed
does not depend on the weights), excluding one warm-up batch of the same shape, with the
clock stopped only after the device has finished. The peer (`benchmarks/peers/*.py
bench-sample`) runs as a subprocess with the same N, batch, steps, precision and threads.

Sampler MFU = forward FLOPs per image (torch.utils.flop_counter) x network evaluations per
image x N / seconds / the measured matrix-product rate (or --peak-tflops).

Examples:
    # CPU: DDIM-50, 64 images at batch 64, MNIST-recipe-sized network at 32 px, vs diffusers
    python benchmarks/bench_sample.py --device cpu --threads 2 --channels 32 --dim-mults 1,2,2 \
        --res-blocks 1 --attn-resolutions 8 --image-size 32 --n 64 --batch 64 --peer diffusers --repeats 3
    # GPU: DDIM-50 and DDPM-1000, 1,000 images at batch 250, vs denoising-diffusion-pytorch
    python benchmarks/bench_sample.py --device cuda --preset ddpm-peer-64 --n 1000 --batch 250 --peer lucidrains
    python benchmarks/bench_sample.py --device cuda --preset ddpm-peer-64 --sampler ddpm --n 1000 --batch 250
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402
from bench_common import pc  # noqa: E402

from difflab.generation.fast import network_passes  # noqa: E402


class DifflabSampler:
    """A difflab model as `difflab sample` loads it (LoadedModel: network, schedule, config,
    then `accelerated` with the same fast-path switches as --compile / --cuda-graphs),
    with random weights instead of a checkpoint, and the generation loop around it."""

    def __init__(self, unet, device: torch.device, precision: str, channels_last: bool, compile_network: str,
                 seed: int = 0, batch: int = 250, cuda_graphs: str = "auto", passes: int = 0,
                 autocast_only: bool = False) -> None:
        from dataclasses import replace

        from difflab.build import build_network, build_schedule
        from difflab.generation import LoadedModel
        from difflab.generation.fast import resolve_sampling_speed

        torch.manual_seed(seed)
        config = bc.train_config_for(unet, seed=seed)
        model = bc.randomize_zero_init(build_network(config, unet.image_channels), seed)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(device=device, memory_format=memory_format).eval().requires_grad_(False)
        self.model, self.device, self.precision, self.seed = model, device, precision, seed
        speed = resolve_sampling_speed(device, bc.difflab_precision_word(precision), compile_network, cuda_graphs,
                                       passes)
        if autocast_only:
            speed = replace(speed, low_precision=None)
        self.speed = speed
        self.compiled = speed.compile
        self.compile_seconds = 0.0  # compilation and graph capture happen in the untimed warm-up
        self.plain = LoadedModel(model, build_schedule(config, device), config, unet.image_channels, 0,
                                 Path("<random weights>"))
        self.loaded = self.plain.accelerated(speed)

    def check(self, batch: int = 16) -> float:
        """Relative error ||fast - plain|| / ||plain|| of one network pass against the plain
        float32 network on fresh random inputs (bf16 lands near 1e-2)."""
        size, channels = self.plain.config.image_size, self.plain.image_channels
        x = torch.randn(batch, channels, size, size, device=self.device)
        t = torch.randint(0, 1000, (batch,), device=self.device).float()
        with torch.inference_mode():
            reference = self.plain.network(x, t).double()
            with bc.autocast(self.device, self.precision):
                fast = self.loaded.network(x, t).double()
        return float((fast - reference).norm() / reference.norm())

    def run(self, n: int, batch: int, sampler: str, steps: int) -> int:
        """Generate `n` images; returns how many came back (uint8, on the host)."""
        from difflab.generation import generate_images

        count = 0
        for _, images in generate_images(self.loaded, n, batch_size=batch, sampler=sampler,
                                         steps=None if sampler == "ddpm" else steps, seed=self.seed,
                                         precision=bc.difflab_precision_word(self.precision)):
            count += len(images)
        bc.sync(self.device)
        return count

    def timed(self, n: int, batch: int, sampler: str, steps: int, warmup_steps: int) -> dict[str, Any]:
        start = time.perf_counter()
        self.run(batch, batch, "ddim", min(warmup_steps, steps))  # same shapes, short schedule: untimed
        if n % batch:
            self.run(n % batch, n % batch, "ddim", 2)  # the last batch's shape: its compile and capture
        self.compile_seconds = time.perf_counter() - start
        pc.reset_peak_memory(self.device)
        bc.sync(self.device)
        start = time.perf_counter()
        count = self.run(n, batch, sampler, steps)
        seconds = time.perf_counter() - start
        return {"n": count, "seconds": seconds, "images_per_s": count / seconds,
                **pc.memory_report(self.device, batch)}


def peer_flags(args: argparse.Namespace, peer: str, unet, precision: str) -> list[str]:
    flags = ["--device", args.device_type, "--precision", precision, "--seed", str(args.seed),
             "--n", str(args.peer_n or args.n), "--batch", str(args.batch), "--steps", str(args.steps),
             "--sampler", args.sampler, "--warmup-steps", str(args.warmup_steps)]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return flags + bc.peer_sizing_flags(peer, unet) + shlex.split(args.peer_extra)


def bench(args: argparse.Namespace, device: torch.device, unet, precision: str, peer_precision: str,
          peer: str) -> list[dict[str, Any]]:
    """Alternate peer (subprocess, first) and difflab `--repeats` times; median seconds per side."""
    label = args.bench_label or f"{args.sampler}-{args.steps} {unet.image_size}px n{args.n} b{args.batch}"
    peer_runs: list[dict[str, Any]] = []
    ours_runs: list[dict[str, Any]] = []
    sampler: DifflabSampler | None = None
    for repeat in range(args.repeats):
        if peer != "none":
            peer_runs.append(bc.run_peer(peer, "bench-sample", peer_flags(args, peer, unet, peer_precision)))
            if "error" not in peer_runs[-1]:
                print(f"[{repeat}] {peer}: {peer_runs[-1]['images_per_s']:.2f} img/s "
                      f"({peer_runs[-1]['seconds']:.2f} s)", file=sys.stderr, flush=True)
        if sampler is None:
            sampler = DifflabSampler(unet, device, precision, args.channels_last_on, args.compile, args.seed,
                                     args.batch, args.cuda_graphs, passes=network_passes(args.n, args.batch, args.steps))
        ours_runs.append(sampler.timed(args.n, args.batch, args.sampler, args.steps, args.warmup_steps))
        print(f"[{repeat}] difflab: {ours_runs[-1]['images_per_s']:.2f} img/s ({ours_runs[-1]['seconds']:.2f} s)",
              file=sys.stderr, flush=True)
    assert sampler is not None

    from difflab.network import count_flops

    forward_flops = count_flops(sampler.model, unet.image_size)
    evaluations = args.steps  # network evaluations per image (DDIM: steps; DDPM: T)
    peak, peak_source = bc.peak_tflops(args, device, precision)
    ours_s = bc.median([r["seconds"] for r in ours_runs])
    ours_ips = ours_runs[0]["n"] / ours_s
    rows = [{
        "bench": label, "side": "difflab", "parameters": sampler.model.num_parameters(), "batch": args.batch,
        "precision": precision, "n": ours_runs[0]["n"], "seconds": ours_s,
        "seconds_each": [r["seconds"] for r in ours_runs], "images_per_s": ours_ips,
        "peak_memory_mib_per_image": ours_runs[-1].get("peak_memory_mib_per_image"),
        "peak_reserved_mib_per_image": ours_runs[-1].get("peak_reserved_mib_per_image"),
        "forward_gflops_per_image": forward_flops / 1e9,
        "mfu": bc.mfu(forward_flops * evaluations * ours_ips, peak), "peak_tflops": peak,
        "peak_source": peak_source, "network": bc.describe_unet(unet), "channels_last": args.channels_last_on,
        "compiled": sampler.compiled, "compile_seconds": sampler.compile_seconds, "speed": sampler.speed.describe(),
        "fast_vs_plain_rel_error": sampler.check(),
        "sampler": f"{args.sampler}-{args.steps}",
    }]
    if peer != "none":
        good = [r for r in peer_runs if "error" not in r]
        if not good:
            rows.append({"bench": label, "side": peer, "error": peer_runs[-1].get("error"), "batch": args.batch,
                         "precision": peer_precision})
        else:
            peer_s = bc.median([r["seconds"] for r in good])
            peer_ips = good[0]["n"] / peer_s
            peer_peak = peak if peer_precision == precision else bc.peak_tflops(args, device, peer_precision)[0]
            peer_fwd = bc.peer_forward_flops(peer, bc.peer_sizing_flags(peer, unet), unet.image_size, device)
            rows.append({
                "bench": label, "side": peer if good[0]["n"] == ours_runs[0]["n"] else f"{peer} (n={good[0]['n']})",
                "parameters": good[-1].get("parameters"), "batch": args.batch, "precision": peer_precision,
                "n": good[0]["n"], "seconds": peer_s, "seconds_each": [r["seconds"] for r in good],
                "images_per_s": peer_ips, "peak_memory_mib_per_image": good[-1].get("peak_memory_mib_per_image"),
                "peak_reserved_mib_per_image": good[-1].get("peak_reserved_mib_per_image"),
                "forward_gflops_per_image": peer_fwd / 1e9 if peer_fwd else None,
                "mfu": bc.mfu(peer_fwd * evaluations * peer_ips, peer_peak) if peer_fwd else None,
                "peak_tflops": peer_peak, "sampler": good[-1].get("sampler"), "pipeline": good[-1].get("pipeline"),
                "config": good[-1].get("config"), "command": good[-1].get("command"),
            })
    bc.add_ratios(rows)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    bc.add_common_options(parser)
    bc.add_network_options(parser, default_preset=None)
    parser.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"))
    parser.add_argument("--steps", type=int, default=0, help="DDIM steps (default 50); DDPM always runs all 1000")
    parser.add_argument("--n", type=int, default=1000, help="images to generate (timed)")
    parser.add_argument("--peer-n", type=int, default=0,
                        help="images for the peer (default: --n); images/s is compared, e.g. for a slow DDPM peer")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--warmup-steps", type=int, default=10, help="DDIM steps of the untimed warm-up batch")
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                        help="auto: as training (off by default: slower in eager passes on an H100)")
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="as `difflab sample --compile` (auto: on a GPU for jobs of >= 1000 batched passes)")
    parser.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"),
                        help="as `difflab sample --cuda-graphs` (auto: on a GPU)")
    parser.add_argument("--ab", default="",
                        help="in-process interleaved A/B of difflab fast paths instead of the peer comparison, e.g. "
                             "eager-autocast,eager,eager-graphs,compiled-graphs (--repeats rounds of --ab-calls runs "
                             "each); prints each variant's relative error against the plain float32 pass")
    parser.add_argument("--ab-calls", type=int, default=2, help="--ab: timed generations per variant and round")
    return parser


def ab_main(args: argparse.Namespace, argv: list[str], device: torch.device, unet, precision: str) -> dict[str, Any]:
    """`--ab`: each variant a separate DifflabSampler, generations timed round-robin in this process."""
    env_before = bc.environment(device)
    variants = {}
    errors = {}
    for name, flags in bc.parse_ab(args.ab):
        sampler = DifflabSampler(unet, device, precision, flags["channels_last"], "on" if flags["compile"] else "off",
                                 args.seed, args.batch, "on" if flags["graphs"] else "off",
                                 autocast_only=flags["autocast"])
        start = time.perf_counter()
        sampler.run(args.batch, args.batch, args.sampler, 2)
        errors[name] = sampler.check()
        print(f"{name}: {sampler.speed.describe()}; set-up (compile, capture) {time.perf_counter() - start:.1f} s; "
              f"relative error vs plain fp32 {errors[name]:.2e}", file=sys.stderr, flush=True)
        variants[name] = (lambda s=sampler: s.run(args.n, args.batch, args.sampler, args.steps))
    rows = bc.run_ab(variants, args.repeats, args.ab_calls, device)
    for row in rows:
        row["rel_error_vs_fp32"] = errors[row["variant"]]
    what = f"difflab {args.sampler}-{args.steps}, {args.n} images at batch {args.batch}, {precision}, {bc.describe_unet(unet)}"
    return bc.finish("sample-ab", argv, device, env_before, rows, args.json_out,
                     lambda rows, env: bc.ab_table(rows, env, what, args.n), precision=precision)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if not args.preset and args.channels is None:
        args.preset = "ddpm-peer-64"
    timesteps = 1000  # difflab's default TrainConfig and both peers
    if args.sampler == "ddpm":
        if args.steps not in (0, timesteps):
            raise SystemExit(f"DDPM runs all {timesteps} steps; leave --steps out")
        args.steps = timesteps
    args.steps = args.steps or 50
    bc.set_threads(args.threads)
    bc.PEER_ENV.update(bc.apply_cpu_allocator(args.cpu_allocator))
    device = bc.pick_device(args.device)
    args.device_type = device.type
    precision = bc.resolve_precision(args.precision, device)
    peer_precision = precision if args.peer_precision == "same" else args.peer_precision
    bc.apply_precision(precision, device)
    args.channels_last_on = bc.channels_last_for(args.channels_last, device)
    peer = bc.resolve_peer(args.peer, device)
    unet = bc.unet_config_from_args(args)
    print(f"difflab network: {bc.describe_unet(unet)}; peer: {peer}", file=sys.stderr, flush=True)
    if args.ab:
        return ab_main(args, argv, device, unet, precision)
    env_before = bc.environment(device)
    rows = bench(args, device, unet, precision, peer_precision, peer)
    return bc.finish("sample", argv, device, env_before, rows, args.json_out)


if __name__ == "__main__":
    main()
