"""Autoguidance on a trained MNIST run: score the EMA weights alone, then guided by each listed
earlier checkpoint and weight (confident-class rate of 256 DDIM-50 eta-1 samples, as
mnist_quality.py scores). Train the run with checkpoints kept, e.g. the MNIST recipe.

    python benchmarks/mnist_guidance.py RUN 500:2 750:2.5 750:3.5    # GUIDE_STEP:WEIGHT ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_quality import score_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder with checkpoints/ckpt-<step>.safetensors")
    parser.add_argument("guides", nargs="*", help="GUIDE_STEP:WEIGHT pairs")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    alone = score_run(args.run, args.device)
    print(f"unguided: {alone['confident_rate']:.1%} ({alone['classes_covered']} digits {alone['class_counts']})")
    for pair in args.guides:
        step, weight = pair.split(":")
        guide = args.run / "checkpoints" / f"ckpt-{int(step):08d}.safetensors"
        result = score_run(args.run, args.device, guide=str(guide), guidance=float(weight))
        print(f"guide step {step} weight {weight}: {result['confident_rate']:.1%} "
              f"({result['classes_covered']} digits {result['class_counts']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
