"""Where a training step's time goes: runs the real training loop (`difflab.training.train`) for a
few steps under torch.profiler and prints the busiest operators, plus wall time per step against
the time the device spent in kernels. A device busy for much less than the wall time is bound by
the host (Python and kernel launches), not by arithmetic or memory. The profiler itself slows the
host, so read the shares, not the absolute times (an eager H200 step of the GPU-minute variant took
~41 ms unprofiled, 153 ms profiled).

    python benchmarks/train_profile.py --recipe mnist --set batch_size=512 channels=64 --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, schedule

from difflab.config import TrainConfig
from difflab.recipes import RECIPES
from difflab.training import train

SHARED = Path(os.environ.get("DIFFLAB_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="mnist", choices=sorted(RECIPES))
    parser.add_argument("--set", nargs="*", default=[],
                        help="KEY=VALUE training options, e.g. batch_size=512 dim_mults=1,2,2 (typed and checked as a config file's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=60, help="steps profiled, after 20 warm-up steps")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)  # TrainConfig.from_dict converts the strings
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    warmup, active = 20, args.steps
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig.from_dict({**RECIPES[args.recipe], **overrides, "out": folder, "steps": warmup + active,
                                        "save_every": 10**9, "log_every": 10**9, "max_minutes": 0,
                                        "data_root": str(SHARED / "data" / "mnist")}).validate()
        if args.device == "cpu":
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
        step_times: list[float] = []
        with profile(activities=activities, schedule=schedule(wait=0, warmup=warmup - 1, active=active, repeat=1)) as prof:
            last = [time.perf_counter()]

            def on_step() -> None:  # called by the profiler hook below after every optimizer step
                prof.step()
                now = time.perf_counter()
                step_times.append(now - last[0])
                last[0] = now

            hook = register_optimizer_step_post_hook(lambda *_: on_step())
            try:
                train(config, progress=False)
            finally:
                hook.remove()
    table = prof.key_averages().table(sort_by="cuda_time_total" if args.device == "cuda" else "cpu_time_total",
                                      row_limit=args.rows, max_name_column_width=60)
    print(table)
    timed = step_times[warmup:]
    wall_ms = 1000 * sum(timed) / len(timed)
    print(f"wall time per step: {wall_ms:.2f} ms over {len(timed)} steps ({args.device}, {overrides})")
    if args.device == "cuda":
        kernel_ms = sum(event.device_time for event in prof.events() if event.device_type.name == "CUDA") / 1000 / active
        print(f"device kernel time per step: {kernel_ms:.2f} ms ({kernel_ms / wall_ms:.0%} of the wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
