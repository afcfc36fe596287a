"""Autoguidance on a trained MNIST run: score the EMA weights alone, then guided by each listed
earlier checkpoint and weight (confident-class rate of 256 DDIM-50 eta-1 samples, as
mnist_quality.py scores). Train the run with checkpoints kept, e.g. the MNIST recipe.

    python benchmarks/mnist_guidance.py RUN 500:2 750:2.5 750:3.5    # GUIDE_STEP:WEIGHT ...
    python benchmarks/mnist_guidance.py RUN 0.3:3.5 0.4:3.5 0.5:3.5  # FRACTION (of the run's steps):WEIGHT
    python benchmarks/mnist_guidance.py RUN 0.3:3.5:0 0.3:3.5:200     # ...:MIN_T (no guidance below; default 100)
    python benchmarks/mnist_guidance.py RUN OTHER/checkpoints/ckpt-00001000.safetensors:2.5  # another run's checkpoint
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_quality import score_run  # noqa: E402

from difflab.generation import load_model  # noqa: E402
from difflab.recipes import MNIST_GUIDANCE  # noqa: E402
from difflab.generation.guide import resolve_guide  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder with checkpoints/ckpt-<step>.safetensors")
    parser.add_argument("guides", nargs="*", help="GUIDE_STEP:WEIGHT or FRACTION:WEIGHT pairs, each optionally :MIN_T")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="", help="append results as JSON lines here")
    parser.add_argument("--sampler", default="ddim:50:1",
                        help="SAMPLER:STEPS:ETA (default ddim:50:1, the recipe's), e.g. dpmpp-2m:50:1")
    args = parser.parse_args()
    name, steps, eta = args.sampler.split(":")
    sampling = {"sampler": name, "sampler_steps": int(steps), "eta": float(eta)}
    main_model = load_model(args.run, device="cpu")
    results = [{"guide": None, "sampling": args.sampler, **score_run(args.run, args.device, **sampling)}]
    for pair in args.guides:
        where, weight, *rest = pair.split(":")
        min_t = int(rest[0]) if rest else MNIST_GUIDANCE["min_t"]
        if where.endswith(".safetensors"):  # a checkpoint of another run, e.g. a smaller model
            guide = Path(where)
        elif "." in where:
            guide = resolve_guide(main_model, "auto", float(where))
        else:
            guide = args.run / "checkpoints" / f"ckpt-{int(where):08d}.safetensors"
        results.append({"guide": pair, "sampling": args.sampler,
                        **score_run(args.run, args.device, guide=str(guide), guidance=float(weight), guide_min_t=min_t,
                                    **sampling)})
    for result in results:
        guidance = result["guidance"]
        shown = (f"guide {Path(guidance['guide']).parent.parent.name} step {guidance['guide_step']} "
                 f"weight {guidance['weight']:g} from t {guidance['min_t']}") if guidance else "unguided"
        print(f"{args.run.name} step {main_model.step}, {args.sampler}: {shown}: {result['confident_rate']:.1%} "
              f"({result['classes_covered']} digits {result['class_counts']})", flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps({"run": args.run.name, "step": main_model.step, **result}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
