"""Score sample sets brought back from the GPU (uint8 (N, H, W, C) arrays in .npz files, as
benchmarks/gpu/families.sh writes them) against a real set, on this CPU: the Frechet distance and
KID in a fixed feature network's features, the anime-face detection rate, and the near-copy count
(samples within difflab nearest's RMS pixel threshold of a training image). The reference is read
once for every set, so six sets cost one pass over the 20k faces.

    python benchmarks/score_samples.py ../shared/data/anime-faces-64px-20k.zip \
        --features ../shared/eval/featnet.py:cifar10 --detector-weights ../shared/data/lbpcascade_animeface.xml \
        --out scores.json SETS.npz ...
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from difflab.experiments.scoring import Scorer, ScoringOptions
from difflab.metrics.evaluation import measure
from difflab.metrics.nearest import DEFAULT_COPY_THRESHOLD, find_matches, near_copies


def unpack(npz: Path, folder: Path) -> Path:
    images = np.load(npz)["images"]
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images, 1):
        Image.fromarray(image).save(folder / f"{index}.png")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="real images (folder or .zip)")
    parser.add_argument("sets", nargs="+", help=".npz files of generated images")
    parser.add_argument("--features", required=True, help="FILE.py:FUNCTION feature network (e.g. featnet cifar10)")
    parser.add_argument("--detector-weights", required=True, help="lbpcascade_animeface.xml, for the AFD rate")
    parser.add_argument("--out", required=True, help="JSON file of the scores")
    args = parser.parse_args()
    options = ScoringOptions(features=args.features, afd="yes", detector_weights=args.detector_weights, progress=False)
    scorer = Scorer(args.reference, options)
    reference = measure(args.reference, scorer.extractor, thumbnails=True, progress=False)
    results = {"scoring": scorer.describe(), "copy_threshold": DEFAULT_COPY_THRESHOLD, "sets": {}}
    print(f"{'set':<22} {'FD':>8} {'KID':>16} {'AFD':>7} {'near-copies':>12}")
    with tempfile.TemporaryDirectory() as scratch:
        for path in map(Path, args.sets):
            folder = unpack(path, Path(scratch) / path.stem)
            scores = scorer.score(str(folder))
            generated = measure(str(folder), scorer.extractor, thumbnails=True, progress=False)
            matches = find_matches(generated.used, generated.features, generated.thumbnails,
                                   reference.used, reference.features, reference.thumbnails)
            scores["near_copies"] = len(near_copies(matches))
            scores["median_nn_pixel_rms"] = float(np.median([m.pixel_distance for m in matches]))
            results["sets"][path.stem] = scores
            kid = scores["kid"]
            print(f"{path.stem:<22} {scores['distance']['value']:>8.3f} {kid['value']:>9.4f} ± {kid['std']:.4f} "
                  f"{scores['afd']['value']:>7.1%} {scores['near_copies']:>12}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"reference AFD rate {results['scoring']['reference_afd_rate']:.1%}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
