#!/usr/bin/env python3
"""Issue 17: where a run's training step spends its time, kernel time against wall time.

The step is the run's own (`loop_step.py`: any family, built from run options, compiled and
CUDA-graphed as `training/loop.py` decides). After `--warmup` steps (the compile), it reports:

- wall: seconds per step synchronised every step, and pipelined (peer_common's two clocks);
- host: seconds to enqueue one step onto an idle GPU. Near the wall time, the step is
  launch-bound; far below it, the GPU is the bound;
- kernels (torch.profiler over `--profile-steps` steps): kernel time and kernels per step, the
  busy share (kernel time / pipelined wall time), the kernel time by kind (`CATEGORIES`), and
  the top kernels. On a CPU the same table lists the operators' own CPU time instead;
- MFU: model FLOPs per image of one training step, counted with torch's FlopCounterMode on an
  eager copy of the step (forward and backward, and a GAN's lazy regularisers averaged over
  `--flop-steps` steps), over the measured bf16 matrix rate (`bench_common.measure_matmul_tflops`).

    python benchmarks/profile_train_step.py --out DIR                    # the default run: batch 64, compiled
    python benchmarks/profile_train_step.py --preset ddpm-peer-64 --options '{"batch_size": 256}' --out DIR
    python benchmarks/profile_train_step.py --options '{"model": "stylegan2", "compile": "on"}' --out DIR
    python benchmarks/profile_train_step.py --device cpu --options '{"batch_size": 4, "image_size": 16}'  # smoke

Writes DIR/profile-train-step.json and .md (the table below and the top kernels).
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_common as bc  # noqa: E402  (also puts src/ and peers/ on the path)
import peer_common as pc  # noqa: E402
from loop_step import build_loop_step  # noqa: E402

# Kernel (CUDA) or operator (CPU) names -> kinds; the first match wins, so attention comes before
# the matrix products it contains and the optimiser before the pointwise kernels it is made of.
CATEGORIES = (
    ("attention", r"flash|fmha|attention|sdpa"),
    ("convolution and matrix products", r"conv|cudnn|gemm|xmma|cutlass|wgmma|sm90_|sm80_|implicit|dgrad|wgrad"
                                        r"|fprop|aten::mm\b|aten::addmm|aten::bmm|matmul"),
    ("optimiser, EMA, gradient clipping", r"adam|multi_tensor|foreach|lerp|norm_kernel|clip"),
    ("normalisation and other reductions", r"group_norm|layer_norm|var_mean|welford|triton_red|triton_per|reduce"),
    ("copies and layout changes", r"copy|transpose|nchw|nhwc|memcpy|memset|\bcat\b|cat_|permute|contiguous"),
    ("pointwise", r"triton_poi|elementwise|vectorized|unrolled|silu|sigmoid|aten::mul|aten::add|aten::sub"),
)


def category(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, pattern in CATEGORIES if re.search(pattern, lowered)), "other")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--preset", default="", help="a network preset (difflab.network.presets), e.g. ddpm-peer-64")
    parser.add_argument("--options", default="{}", help="JSON run options (any family's), e.g. '{\"batch_size\": 256}'")
    parser.add_argument("--warmup", type=int, default=5, help="steps before any clock (the compile, graph capture)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per clock")
    parser.add_argument("--profile-steps", type=int, default=5, help="steps under torch.profiler")
    parser.add_argument("--flop-steps", type=int, default=16, help="eager steps whose FLOPs are averaged")
    parser.add_argument("--top", type=int, default=15, help="kernels listed")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    parser.add_argument("--out", default="", help="folder for profile-train-step.json and .md")
    return parser.parse_args(argv)


def run_options(args: argparse.Namespace) -> dict:
    values = json.loads(args.options)
    if args.preset:
        from difflab.network.presets import preset_options
        values = {**preset_options(args.preset, values.get("image_size")), **values}
    return values


def flops_per_image(values: dict, device: torch.device, steps: int) -> float:
    """Model FLOPs of one training step per image: FlopCounterMode over `steps` steps of an
    eager copy at batch 2 (the counter cannot see inside compiled graphs)."""
    from torch.utils.flop_counter import FlopCounterMode
    eager = build_loop_step({**values, "batch_size": 2, "compile": "off", "cuda_graphs": "off"}, device)
    eager.step(0)  # lazily built state (optimiser moments) outside the count
    with FlopCounterMode(display=False) as counter:
        for index in range(1, steps + 1):
            eager.step(index)
    return counter.get_total_flops() / steps / 2


def kernel_profile(loop, step, steps: int) -> tuple[list[dict], float, int]:
    """Per kernel (CUDA) or operator (CPU): name, kind, own time per step (s) and calls per step."""
    from torch.profiler import ProfilerActivity, profile
    cuda = loop.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
        loop.sync()
    wanted = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    rows = []
    for event in prof.key_averages():
        if event.device_type != wanted:
            continue
        own_us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if own_us <= 0:
            continue
        rows.append({"name": event.key, "kind": category(event.key), "seconds_per_step": own_us / 1e6 / steps,
                     "calls_per_step": event.count / steps})
    rows.sort(key=lambda row: -row["seconds_per_step"])
    total = sum(row["seconds_per_step"] for row in rows)
    return rows, total, round(sum(row["calls_per_step"] for row in rows))


def host_enqueue_s(loop, step, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        loop.sync()
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    loop.sync()
    return statistics.median(times)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = bc.pick_device(args.device)
    if args.threads:
        bc.set_threads(args.threads)
    values = run_options(args)
    loop = build_loop_step(values, device)
    config = loop.config
    for index in range(args.warmup):
        loop.step(index)
    loop.sync()
    ready_s = time.perf_counter() - loop.prepare_started
    # step numbers count on, so that lazy work (a GAN's R1 every 16 steps) comes at its interval
    indices = itertools.count(args.warmup)

    def step() -> None:
        loop.step(next(indices))
    synced = pc.time_steps(step, args.steps, 0, device)
    pipelined = pc.time_pipelined(step, args.steps, device)
    wall_s, synced_s = statistics.median(pipelined), statistics.median(synced)
    host_s = host_enqueue_s(loop, step)
    kernels, kernel_s, kernel_count = kernel_profile(loop, step, args.profile_steps)
    train_flops = flops_per_image(values, device, args.flop_steps)
    peak = bc.measure_matmul_tflops(device, "bf16" if loop.precision == "bf16" else "fp32")
    mfu = bc.mfu(train_flops * config.batch_size / wall_s, peak)
    kinds: dict[str, float] = {}
    for row in kernels:
        kinds[row["kind"]] = kinds.get(row["kind"], 0.0) + row["seconds_per_step"]
    what, whats = ("kernel", "kernels") if device.type == "cuda" else ("operator CPU", "operators (own CPU time)")
    lines = [f"{bc.device_name(device)}; torch {torch.__version__}; commit {bc.git_commit()}; model {config.model}; "
             f"batch {config.batch_size}; {config.image_size} px; {loop.precision}; compile "
             f"{'on' if loop.compiling else 'off'}, CUDA graphs {'on' if loop.cuda_graphs else 'off'}",
             "", "| measure | value |", "|---|---|",
             f"| ready (prepare + {args.warmup} warm-up steps) | {ready_s:.1f} s |",
             f"| step, pipelined (as the loop runs) | {1e3 * wall_s:.2f} ms ({config.batch_size / wall_s:,.0f} img/s) |",
             f"| step, synchronised every step | {1e3 * synced_s:.2f} ms |",
             f"| host time to enqueue one step | {1e3 * host_s:.2f} ms ({host_s / wall_s:.0%} of the step) |",
             f"| {what} time per step | {1e3 * kernel_s:.2f} ms ({kernel_s / wall_s:.0%} of the step), "
             f"{kernel_count} per step |",
             f"| training FLOPs per image | {train_flops / 1e9:.2f} GFLOP |",
             f"| MFU against {peak:.3g} TFLOP/s | {100 * mfu:.1f}% |" if mfu is not None else "| MFU | - |",
             "", f"| kind | ms per step | share of {what} time |", "|---|---|---|"]
    lines += [f"| {kind} | {1e3 * seconds:.2f} | {seconds / kernel_s:.0%} |"
              for kind, seconds in sorted(kinds.items(), key=lambda item: -item[1])]
    lines += ["", f"| top {whats} | kind | ms per step | calls per step |", "|---|---|---|---|"]
    lines += [f"| `{row['name'][:100]}` | {row['kind']} | {1e3 * row['seconds_per_step']:.3f} | "
              f"{row['calls_per_step']:g} |" for row in kernels[:args.top]]
    if device.type == "cuda" and kernel_count < 5:
        lines.append("\nThe profiler saw almost no kernels: under CUDA graphs it may not see inside the replays; "
                     'rerun with --options \'{"cuda_graphs": "off"}\' for the kernels.')
    text = "\n".join(lines) + "\n"
    print(text)
    report = {"command": "python benchmarks/profile_train_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "options": values, "ready_s": ready_s, "step_s_pipelined": wall_s, "step_s_synced": synced_s,
              "host_enqueue_s": host_s, "kernel_s_per_step": kernel_s, "kernels_per_step": kernel_count,
              "train_flops_per_image": train_flops, "peak_tflops": peak, "mfu": mfu, "kinds_s": kinds,
              "kernels": kernels[:50], "text": text}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile-train-step.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out / "profile-train-step.md").write_text(f"`{report['command']}`\n\n{text}")
    return report


if __name__ == "__main__":
    main()
