#!/usr/bin/env python3
"""Training throughput of difflab next to a peer, in one invocation, on the same device.

Why: issue 5 asks for difflab's training step to be measured side by side with the peers
(same image size, batch, precision, and a network of matching size, with both parameter
counts stated). This script times difflab's *trainer* step, not a simplified one:

    build_network / build_loss from a TrainConfig (difflab's defaults: cosine, pred_v, min-SNR-5),
    AdamW fused on CUDA / foreach on the CPU (the trainer's `training.speed.optimizer_kernel`), the lr warm-up,
    a per-step seeded generator, autocast per `resolve_mixed_precision` (or --precision),
    channels_last on CUDA, optional torch.compile with the eager fallback, backward, grad-norm
    clip 1, optimizer step, zero_grad(set_to_none), EMA update (foreach lerp)

on random images already on the device (the data pipeline is not measured: the peers' scripts
do the same), after a warm-up, timed two ways (issue 17): synchronised after every step (the
median step; what a loop that reads `loss.item()` every step gets, as denoising-diffusion-
pytorch's Trainer does for its progress bar) and pipelined (three blocks, synchronised once
each; what difflab's loop gets, since it reads the loss every --log-every steps). difflab's row
is its pipelined rate; the peer gets a row each way, and the ratio is against the faster one.
The peer runs as a subprocess of `benchmarks/peers/*.py` with the same batch, size, precision
and threads:

    diffusers  (`diffusers_peer.py`): UNet2DModel sized with difflab's own flags, so widths,
               depth and attention placement match;
    lucidrains (`lucidrains_ddpm.py`): the README's fixed 35.7M Unet; pair it with
               `--preset ddpm-peer-64` (36.7M) on the difflab side.

Reported per side: parameters, img/s, the ratio difflab/peer, peak memory per image (CUDA),
FLOPs per image (forward counted by torch.utils.flop_counter; a training step ~ 3x) and MFU
against the measured matrix-product rate (or --peak-tflops).

Examples:
    # CPU, the MNIST-recipe-sized network at 32 px, both sides at difflab's default precision
    python benchmarks/bench_train.py --device cpu --threads 2 --channels 32 --dim-mults 1,2,2 \
        --res-blocks 1 --attn-resolutions 8 --image-size 32 --batch 64 --peer diffusers --repeats 3
    # GPU, against denoising-diffusion-pytorch at matching size
    python benchmarks/bench_train.py --device cuda --preset ddpm-peer-64 --batch 64 --peer lucidrains
    # GPU, largest batch that fits, both sides (64 and 128 px)
    python benchmarks/bench_train.py --device cuda --preset ddpm-peer-64 --max-batch --peer lucidrains
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

from difflab.config import TrainConfig  # noqa: E402
from bench_common import pc  # noqa: E402


# --------------------------------------------------------------------------------------------
# difflab's training step, as `difflab.training.loop.train` runs it
# --------------------------------------------------------------------------------------------
class DifflabTrainStep:
    """One optimisation step of the trainer (phase 5a of `train()`), without accelerate's
    wrapper (single process: accelerator.autocast() is torch.autocast, clip_grad_norm_ is
    torch's, backward is loss.backward()) and without the data pipeline."""

    def __init__(self, unet, device: torch.device, precision: str, channels_last: bool, compile_network: bool,
                 seed: int = 0, batch: int = 64, cuda_graphs: str = "auto") -> None:
        from difflab.build import build_loss, build_network, build_schedule
        from difflab.training.ema import EMA
        from difflab.training.loop import step_seed
        from difflab.training.lr_schedule import learning_rate
        from difflab.training.speed import compile_or_eager, optimizer_kernel, use_cuda_graphs

        torch.manual_seed(seed)
        self.config = bc.train_config_for(unet, batch_size=batch, seed=seed)
        self.device, self.precision = device, precision
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_network(self.config, unet.image_channels).to(device=device,
                                                                          memory_format=self.memory_format)
        self.ema = EMA(self.model, decay=self.config.ema_decay, update_every=self.config.ema_every,
                       warmup=self.config.ema_warmup_steps > 0)
        self.optimizer_kernel = optimizer_kernel(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                           betas=(0.9, self.config.adam_beta2),
                                           weight_decay=self.config.weight_decay, **self.optimizer_kernel)
        self.loss_fn = build_loss(self.config, build_schedule(self.config, device))
        example = (torch.zeros(batch, unet.image_channels, unet.image_size, unet.image_size, device=device),
                   torch.zeros(batch, device=device))
        self.compile_seconds = 0.0
        start = time.perf_counter()
        self.cuda_graphs = use_cuda_graphs(cuda_graphs, compile_network, device)
        with bc.autocast(device, precision):  # compile under the step's autocast (else it compiles twice)
            self.network = compile_or_eager(self.model, example, enabled=compile_network, cuda_graphs=self.cuda_graphs)
        self.compile_seconds = time.perf_counter() - start  # compile and/or graph set-up
        self.compiled = self.network is not self.model and compile_network
        self.graphed = self.network is not self.model and self.cuda_graphs
        self.network.train()
        self.step_count = 0
        self.learning_rate, self.step_seed = learning_rate, step_seed

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.config, self.step_count)
        generator = torch.Generator(self.device).manual_seed(self.step_seed(self.config.seed, self.step_count, 0, 0))
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with bc.autocast(self.device, self.precision):
            loss = self.loss_fn(self.network, images, generator)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        self.ema.update(self.model, self.step_count)
        return loss.detach()

    def random_images(self, batch: int) -> torch.Tensor:
        size, channels = self.config.image_size, self.model.config.image_channels
        images = torch.rand(batch, channels, size, size, device=self.device) * 2 - 1
        return images.contiguous(memory_format=self.memory_format)


def time_difflab(step: DifflabTrainStep, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """Median of `steps` synchronised steps after `warmup` (peer_common.time_steps: the peers'
    exact clock), with the CUDA peak over the timed steps; then the same steps pipelined
    (peer_common.time_pipelined: synchronised once per block, as difflab's loop runs)."""
    images = step.random_images(batch)
    for _ in range(warmup):
        step(images)
    bc.sync(step.device)
    baseline = torch.cuda.memory_allocated(step.device) if step.device.type == "cuda" else None
    pc.reset_peak_memory(step.device)
    times = pc.time_steps(lambda: step(images), steps, 0, step.device)
    memory = pc.memory_report(step.device, batch, baseline)
    pipelined = pc.time_pipelined(lambda: step(images), steps, step.device)
    return {**pc.step_stats(times, batch), **pc.pipelined_stats(pipelined, batch), **memory, "times": times}


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------
def peer_flags(args: argparse.Namespace, peer: str, unet, precision: str, batch: int) -> list[str]:
    flags = ["--device", args.device_type, "--precision", precision, "--seed", str(args.seed),
             "--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return flags + bc.peer_sizing_flags(peer, unet) + shlex.split(args.peer_extra)


def bench_throughput(args: argparse.Namespace, device: torch.device, unet, precision: str, peer_precision: str,
                     peer: str) -> list[dict[str, Any]]:
    """Alternate peer (subprocess) and difflab (here) `--repeats` times; the peer runs first,
    before this process has touched the GPU, so it never competes for memory."""
    label = args.bench_label or f"train {unet.image_size}px b{args.batch}"
    sizing = bc.peer_sizing_flags(peer, unet) if peer != "none" else []
    peer_runs: list[dict[str, Any]] = []
    ours_runs: list[dict[str, Any]] = []
    step: DifflabTrainStep | None = None
    for repeat in range(args.repeats):
        if peer != "none":
            peer_runs.append(bc.run_peer(peer, "bench-train", peer_flags(args, peer, unet, peer_precision, args.batch)))
            if "error" not in peer_runs[-1]:
                r = peer_runs[-1]
                print(f"[{repeat}] {peer}: {r['images_per_s']:.1f} img/s synced every step, "
                      f"{r.get('images_per_s_pipelined', float('nan')):.1f} pipelined", file=sys.stderr, flush=True)
        if step is None:
            step = DifflabTrainStep(unet, device, precision, args.channels_last_on, args.compile_on, args.seed, args.batch,
                                    args.cuda_graphs)
        ours_runs.append(time_difflab(step, args.batch, args.steps, args.warmup))
        print(f"[{repeat}] difflab: {ours_runs[-1]['images_per_s']:.1f} img/s synced every step, "
              f"{ours_runs[-1]['images_per_s_pipelined']:.1f} pipelined", file=sys.stderr, flush=True)
    assert step is not None

    from difflab.network import count_flops

    forward_flops = count_flops(step.model, unet.image_size)
    peak, peak_source = bc.peak_tflops(args, device, precision)
    # difflab as its loop runs: pipelined (it reads the loss every --log-every steps); synchronised too
    ours_step = bc.median([r["step_s_pipelined"] for r in ours_runs])
    ours_ips = args.batch / ours_step
    ours = {
        "bench": label, "side": "difflab", "parameters": step.model.num_parameters(), "batch": args.batch,
        "precision": precision, "images_per_s": ours_ips, "step_s_median": ours_step, "timing": "pipelined",
        "images_per_s_synced": args.batch / bc.median([r["step_s_median"] for r in ours_runs]),
        "step_s_medians": [r["step_s_pipelined"] for r in ours_runs],
        "peak_memory_mib_per_image": ours_runs[-1].get("peak_memory_mib_per_image"),
        "peak_reserved_mib_per_image": ours_runs[-1].get("peak_reserved_mib_per_image"),
        "activation_mib_per_image": ours_runs[-1].get("activation_mib_per_image"),
        "forward_gflops_per_image": forward_flops / 1e9,
        "mfu": bc.mfu(3 * forward_flops * ours_ips, peak), "peak_tflops": peak, "peak_source": peak_source,
        "network": bc.describe_unet(unet), "channels_last": args.channels_last_on, "compiled": step.compiled,
        "cuda_graphs": step.graphed, "compile_seconds": step.compile_seconds, "optimizer": f"AdamW {step.optimizer_kernel}",
        "objective": step.config.objective, "ema_every": step.config.ema_every,
    }
    rows = [ours]
    if peer != "none":
        good = [r for r in peer_runs if "error" not in r]
        if not good:
            rows.append({"bench": label, "side": peer, "error": peer_runs[-1].get("error"), "batch": args.batch,
                         "precision": peer_precision})
        else:
            peer_peak = peak if peer_precision == precision else bc.peak_tflops(args, device, peer_precision)[0]
            peer_fwd = bc.peer_forward_flops(peer, sizing, unet.image_size, device)
            # The peer both ways (issue 17): synchronised every step, as its Trainer's loss.item()
            # makes it run, and pipelined, its best; the ratio is against the faster (bc.add_ratios).
            synced = "synced every step, as its Trainer" if peer == "lucidrains" else "synced every step"
            ways = [(synced, "step_s_median", "synced")]
            if all("step_s_pipelined" in r for r in good):
                ways.append(("pipelined, its best", "step_s_pipelined", "pipelined"))
            for words, key, timing in ways:
                rows.append(peer_row(label, f"{peer} ({words})", good, key, timing, args.batch, peer_precision,
                                     peer_fwd, peer_peak))
    bc.add_ratios(rows)
    return rows


def peer_row(label: str, side: str, good: list[dict[str, Any]], key: str, timing: str, batch: int, precision: str,
             forward_flops: int | None, peak: float) -> dict[str, Any]:
    """One table row of the peer's runs `good`, timed by their `key` (synced or pipelined step)."""
    step_s = bc.median([r[key] for r in good])
    ips = batch / step_s
    return {"bench": label, "side": side, "parameters": good[-1].get("parameters"), "batch": batch,
            "precision": precision, "images_per_s": ips, "step_s_median": step_s, "timing": timing,
            "step_s_medians": [r[key] for r in good],
            "peak_memory_mib_per_image": good[-1].get("peak_memory_mib_per_image"),
            "peak_reserved_mib_per_image": good[-1].get("peak_reserved_mib_per_image"),
            "activation_mib_per_image": good[-1].get("activation_mib_per_image"),
            "forward_gflops_per_image": forward_flops / 1e9 if forward_flops else None,
            "mfu": bc.mfu(3 * forward_flops * ips, peak) if forward_flops else None, "peak_tflops": peak,
            "config": good[-1].get("config"), "command": good[-1].get("command"),
            "ema": good[-1].get("ema"), "ema_impl": good[-1].get("ema_impl")}


def bench_max_batch(args: argparse.Namespace, device: torch.device, unet, precision: str, peer_precision: str,
                    peer: str) -> list[dict[str, Any]]:
    """Largest training batch that fits (two full steps each), doubling from --start then 1.5x the
    last fit, as `lucidrains_ddpm.py max-batch` does; peak memory per image at that batch."""
    if device.type != "cuda":
        raise SystemExit("--max-batch needs a GPU")
    label = args.bench_label or f"max batch {unet.image_size}px"
    rows: list[dict[str, Any]] = []
    if peer == "lucidrains":  # first, before this process holds any GPU memory
        result = bc.run_peer("lucidrains", "max-batch", ["--device", "cuda", "--precision", peer_precision,
                                                         "--image-size", str(unet.image_size),
                                                         "--start", str(args.start), "--cap", str(args.cap)])
        rows.append({"bench": label, "side": "lucidrains", "parameters": result.get("parameters"),
                     "batch": result.get("max_batch"), "precision": peer_precision,
                     "peak_memory_mib_per_image": result.get("peak_memory_mib_per_image"),
                     "error": result.get("error"), "command": result.get("command")})
    elif peer == "diffusers":
        rows.append(diffusers_max_batch_subprocess(args, unet, peer_precision, label))

    # Eager, without CUDA graphs: compiling with static shapes would recompile for every batch
    # tried (~80 s each), and torch's CUDA-graph trees do not recover from an out-of-memory
    # error (seen on an H100). So this is the eager step's memory; the compiled step's differs.
    step = DifflabTrainStep(unet, device, precision, args.channels_last_on, False, args.seed, args.start, "off")
    peaks: dict[int, int] = {}

    def fits(batch: int) -> bool:
        ok = False
        try:
            pc.reset_peak_memory(device)
            images = step.random_images(batch)
            for _ in range(2):
                step(images)
            bc.sync(device)
            peaks[batch] = torch.cuda.max_memory_allocated(device)
            ok = True
        except torch.cuda.OutOfMemoryError:
            pass
        images = None  # noqa: F841
        step.optimizer.zero_grad(set_to_none=True)
        pc.free_memory(device)
        return ok

    best = pc.find_max_batch(fits, args.start, args.cap, log=lambda m: print(f"difflab {m}", file=sys.stderr))
    peak = peaks.get(best)
    rows.insert(0, {"bench": label, "side": "difflab", "parameters": step.model.num_parameters(), "batch": best,
                    "precision": precision, "peak_memory_mib_per_image": round(peak / best / 2**20, 3) if peak else None,
                    "peak_by_batch_gib": {b: round(p / 2**30, 3) for b, p in sorted(peaks.items())},
                    "compiled": step.compiled, "channels_last": args.channels_last_on})
    return rows


def diffusers_max_batch_subprocess(args: argparse.Namespace, unet, precision: str, label: str) -> dict[str, Any]:
    """diffusers_peer.py has no max-batch mode: run this script's hidden helper in a fresh process."""
    flags = ["--device", "cuda", "--precision", precision, "--start", str(args.start), "--cap", str(args.cap),
             *bc.peer_sizing_flags("diffusers", unet)]
    command = [sys.executable, str(Path(__file__).resolve()), "--internal-diffusers-max-batch", *flags]
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True)
    try:
        result = pc.parse_result_line(done.stdout)
    except ValueError:
        return {"bench": label, "side": "diffusers", "error": (done.stderr or "")[-500:], "precision": precision}
    return {"bench": label, "side": "diffusers", "parameters": result["parameters"], "batch": result["max_batch"],
            "precision": precision, "peak_memory_mib_per_image": result["peak_memory_mib_per_image"]}


def internal_diffusers_max_batch(argv: list[str]) -> None:
    """Hidden helper: the diffusers training step (its script's TrainLoop) under the same search."""
    import diffusers_peer

    parser = diffusers_peer.build_parser()
    helper = argparse.ArgumentParser()
    helper.add_argument("--start", type=int, default=64)
    helper.add_argument("--cap", type=int, default=8192)
    own, rest = helper.parse_known_args(argv)
    args = parser.parse_args(["bench-train", *rest])
    device = torch.device("cuda")
    pc.set_precision(args.precision or "bf16", device)
    net = diffusers_peer.resolve_network(args)
    unet = diffusers_peer.build_unet(net, args).to(device)
    loop = diffusers_peer.TrainLoop(unet, device, args.precision or "bf16", args.ema)
    peaks: dict[int, int] = {}

    def fits(batch: int) -> bool:
        ok = False
        try:
            pc.reset_peak_memory(device)
            images = torch.rand(batch, 3, net["image_size"], net["image_size"], device=device) * 2 - 1
            for _ in range(2):
                loop.step(images)
            pc.sync(device)
            peaks[batch] = torch.cuda.max_memory_allocated(device)
            ok = True
        except torch.cuda.OutOfMemoryError:
            pass
        images = None  # noqa: F841
        loop.opt.zero_grad(set_to_none=True)
        pc.free_memory(device)
        return ok

    best = pc.find_max_batch(fits, own.start, own.cap, log=lambda m: print(m, file=sys.stderr))
    peak = peaks.get(best)
    pc.emit_result({"max_batch": best, "parameters": pc.count_parameters(unet),
                    "peak_memory_mib_per_image": round(peak / best / 2**20, 3) if peak else None})


def ab_main(args: argparse.Namespace, argv: list[str], device: torch.device, unet, precision: str) -> dict[str, Any]:
    """`--ab`: each variant a separate DifflabTrainStep (own weights, optimizer, compiled graph),
    timed round-robin in this process; no peer."""
    env_before = bc.environment(device)
    variants = {}
    for name, flags in bc.parse_ab(args.ab):
        step = DifflabTrainStep(unet, device, precision, flags["channels_last"], flags["compile"], args.seed, args.batch,
                                "on" if flags["graphs"] else "off")
        if flags["compile"] and not step.compiled:
            print(f"note: {name}: torch.compile fell back to eager", file=sys.stderr)
        images = step.random_images(args.batch)
        print(f"{name}: compiled {step.compiled}, CUDA graphs {step.graphed} (set-up {step.compile_seconds:.1f} s)",
              file=sys.stderr, flush=True)
        for _ in range(args.warmup):
            step(images)
        variants[name] = (lambda step=step, images=images: step(images))
    rows = bc.run_ab(variants, args.repeats, args.steps, device)
    what = f"difflab training step, batch {args.batch}, {precision}, {bc.describe_unet(unet)}"
    return bc.finish("train-ab", argv, device, env_before, rows, args.json_out,
                     lambda rows, env: bc.ab_table(rows, env, what, args.batch), precision=precision)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    bc.add_common_options(parser)
    bc.add_network_options(parser, default_preset=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocator, Adam state, oneDNN)")
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                        help="auto = the trainer's rule: --channels-last (off by default), and never on the CPU")
    parser.add_argument("--compile", default="default", choices=("default", "auto", "on", "off"),
                        help="as `difflab train --compile` (default: the trainer's default)")
    parser.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"),
                        help="as `difflab train --cuda-graphs` (auto: with compile on a GPU)")
    parser.add_argument("--max-batch", action="store_true", help="largest batch that fits (CUDA), both sides")
    parser.add_argument("--ab", default="",
                        help="in-process interleaved A/B of difflab fast paths instead of the peer comparison, e.g. "
                             "eager,eager-graphs,compiled,compiled-graphs (--repeats rounds of --steps steps each)")
    parser.add_argument("--start", type=int, default=64, help="--max-batch: first batch tried")
    parser.add_argument("--cap", type=int, default=8192, help="--max-batch: largest batch tried")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--internal-diffusers-max-batch"]:
        internal_diffusers_max_batch(argv[1:])
        return {}
    args = build_parser().parse_args(argv)
    if not args.preset and args.channels is None:
        args.preset = "ddpm-peer-64"
    bc.set_threads(args.threads)
    bc.PEER_ENV.update(bc.apply_cpu_allocator(args.cpu_allocator))
    device = bc.pick_device(args.device)
    args.device_type = device.type
    precision = bc.resolve_precision(args.precision, device)
    peer_precision = precision if args.peer_precision == "same" else args.peer_precision
    bc.apply_precision(precision, device)
    args.channels_last_on = bc.channels_last_for(args.channels_last, device)
    from difflab.training.speed import should_compile
    args.compile_on = should_compile(TrainConfig().compile if args.compile == "default" else args.compile, device)
    peer = bc.resolve_peer(args.peer, device)
    unet = bc.unet_config_from_args(args)
    print(f"difflab network: {bc.describe_unet(unet)}; peer: {peer}", file=sys.stderr, flush=True)
    env_before = bc.environment(device)
    if args.ab:
        return ab_main(args, argv, device, unet, precision)
    if args.max_batch:
        rows = bench_max_batch(args, device, unet, precision, peer_precision, peer)
    else:
        rows = bench_throughput(args, device, unet, precision, peer_precision, peer)
    return bc.finish("train", argv, device, env_before, rows, args.json_out)


if __name__ == "__main__":
    main()
