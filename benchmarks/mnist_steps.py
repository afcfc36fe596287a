"""How the MNIST recipe's quality grows with training steps, on this CPU, for one precision: train
once to the largest step count, then score the checkpoint at each step count of `--score-at` the
way the CI quality test does (256 samples, `recipes.MNIST_SAMPLING`, autoguided by the checkpoint
nearest 20% of that step: `recipes.MNIST_GUIDANCE`). The recipe's learning rate does not decay, so
step S of the long run is exactly an S-step run (the loop's determinism). Chose the CI test's
step budget (issue 13).

    python benchmarks/mnist_steps.py --precision no   --score-at 1000,1500,2000,2500 --out /tmp/steps-fp32
    python benchmarks/mnist_steps.py --precision bf16 --score-at 1000,1500,2000,2500 --out /tmp/steps-bf16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from difflab.config import TrainConfig
from difflab.generation import generate_images, load_model
from difflab.generation.guide import with_autoguidance
from difflab.metrics.classifier import confident_class_rate
from difflab.recipes import MNIST, MNIST_GUIDANCE, MNIST_SAMPLING
from difflab.training import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_quality import SHARED, load_classifier  # noqa: E402


def score_checkpoint(path: Path, featnet, samples: int = 256, seed: int = 1) -> dict:
    loaded = with_autoguidance(load_model(path, device="cpu"), **MNIST_GUIDANCE)
    images = torch.cat([b for _, b in generate_images(loaded, samples, batch_size=128, seed=seed, precision="auto",
                                                      **MNIST_SAMPLING)])
    score = confident_class_rate(featnet, images.float() / 255)
    return {"step": loaded.step, "guide_step": loaded.guidance["guide_step"], "rate": score.rate,
            "classes": score.classes_covered, "counts": score.class_counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("no", "bf16"), required=True)
    parser.add_argument("--score-at", default="1000,1500,2000,2500", help="comma-separated step counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="run folder (and results.json beside its checkpoints)")
    args = parser.parse_args()
    score_at = sorted(int(s) for s in args.score_at.split(","))
    if any(s % MNIST["save_every"] for s in score_at):
        parser.error(f"--score-at steps must be multiples of the recipe's save_every ({MNIST['save_every']})")
    config = TrainConfig.from_dict({**MNIST, "data_root": str(SHARED / "data" / "mnist"), "out": args.out,
                                    "steps": score_at[-1], "mixed_precision": args.precision,
                                    "seed": args.seed}).validate()
    started = time.perf_counter()
    result = train(config, progress=False)
    train_seconds = time.perf_counter() - started
    featnet = load_classifier("cpu")
    rows = [score_checkpoint(Path(args.out) / "checkpoints" / f"ckpt-{s:08d}.safetensors", featnet) for s in score_at]
    summary = {"precision": args.precision, "seed": args.seed, "train_seconds": train_seconds,
               "seconds_per_step": train_seconds / result.step, "threads": torch.get_num_threads(), "rows": rows}
    (Path(args.out) / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"precision {args.precision}: {result.step} steps in {train_seconds:.0f} s "
          f"({train_seconds / result.step:.3f} s/step, {torch.get_num_threads()} threads)")
    for row in rows:
        print(f"  step {row['step']:>5}  guide {row['guide_step']:>5}  confident {row['rate']:6.1%}  "
              f"classes {row['classes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
