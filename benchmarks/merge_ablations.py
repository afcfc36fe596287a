"""One quality-against-time figure (and table) from several `difflab ablate-warm-start` results.

    python benchmarks/merge_ablations.py A/results.json B/results.json --out FIGURE.png [--md TABLE.md]

The ablations must share their run, reference set and images per row (checked), as the GAN-prior
ablations at 10 and 5 sampler steps do; their rows are put together and drawn by the command's own
plot (`difflab.viz.study_plot.plot_quality_vs_time`), so the figure reads like the command's."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from difflab.experiments.warm_ablation import results_markdown
from difflab.viz.study_plot import plot_quality_vs_time

SHARED = ("run", "checkpoint", "num_images", "device", "scoring")


def merge(documents: list[dict]) -> dict:
    first = documents[0]
    for key in SHARED:
        for document in documents[1:]:
            if document.get(key) != first.get(key):
                raise SystemExit(f"merge_ablations: the ablations differ in {key!r}; merge only ablations of one setup")
    return {**first, "rows": [row for document in documents for row in document["rows"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of ablate-warm-start")
    parser.add_argument("--out", type=Path, required=True, help="the figure (.png)")
    parser.add_argument("--md", type=Path, help="also write the merged table here")
    args = parser.parse_args(argv)
    merged = merge([json.loads(path.read_text()) for path in args.results])
    print(f"wrote {plot_quality_vs_time(merged, args.out)} ({len(merged['rows'])} rows)")
    if args.md:
        args.md.write_text(results_markdown(merged))
        print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
