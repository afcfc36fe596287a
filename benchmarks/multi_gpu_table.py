"""The multi-GPU scaling table from `benchmarks/gpu/multi_gpu.sh`'s metrics logs: images/s in all
and per GPU, scaling efficiency against one GPU, and the loss curves side by side.

    python benchmarks/multi_gpu_table.py multi-gpu-1.jsonl multi-gpu-2.jsonl   # N in the name = GPUs
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def read_run(path: Path) -> tuple[int, list[dict]]:
    gpus = int(re.search(r"(\d+)", path.stem.split("-")[-1]).group(1))
    return gpus, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    runs = dict(sorted(read_run(Path(name)) for name in sys.argv[1:]))
    if 1 not in runs:
        print("need the 1-GPU run (multi-gpu-1.jsonl) as the baseline", file=sys.stderr)
        return 1
    # The first logged interval holds start-up (CUDA context, cuDNN autotuning): left out of the rates.
    rates = {gpus: statistics.median(r["images_per_second"] for r in records[1:]) for gpus, records in runs.items()}
    print("| GPUs | steps | images/s | images/s per GPU | scaling efficiency | final loss |")
    print("|---|---|---|---|---|---|")
    for gpus, records in runs.items():
        per_gpu = rates[gpus] / gpus
        print(f"| {gpus} | {records[-1]['step']} | {rates[gpus]:,.0f} | {per_gpu:,.0f} | "
              f"{per_gpu / rates[1]:.1%} | {records[-1]['loss']:.4f} |")
    print("\nLoss at each logged step (same global batch and seed; each process draws its own t and noise):\n")
    steps = sorted(set.intersection(*({r["step"] for r in records} for records in runs.values())))
    losses = {gpus: {r["step"]: r["loss"] for r in records} for gpus, records in runs.items()}
    print("| step | " + " | ".join(f"{g} GPU" for g in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for step in steps:
        print(f"| {step} | " + " | ".join(f"{losses[g][step]:.4f}" for g in runs) + " |")
    later = [step for step in steps if step >= steps[len(steps) // 3]]
    for gpus in runs:
        if gpus != 1 and later:
            gap = statistics.mean(abs(losses[gpus][s] / losses[1][s] - 1) for s in later)
            print(f"\nmean relative loss difference, {gpus} GPUs vs 1, steps {later[0]}-{later[-1]}: {gap:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
