"""The mean-image effect (issue 15): the distance of K-pass denoiser outputs to the dataset's mean
image, K = 0 ... 50, for a `--model denoiser` run. Prints a table, writes a JSON file and a plot
(distance to the mean, spread of the samples, change per pass) and a strip of the same noise after
K passes.

    PYTHONPATH=src python benchmarks/warm_start_passes.py RUN --data mnist --data-root ../shared/data/mnist \
        --out docs/figures/warm_start_passes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from difflab.data import load_dataset
from difflab.experiments.mean_image import mean_image, pass_distances, rms
from difflab.families import load_generator, require_family
from difflab.families.denoiser import passes_from, noise_generator

DEFAULT_PASSES = "0,1,2,3,4,5,6,8,10,15,20,30,40,50"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a --model denoiser run")
    parser.add_argument("--data", required=True, help="the images the mean is taken over (folder, zip or mnist)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--max-images", type=int, default=10000)
    parser.add_argument("--passes", default=DEFAULT_PASSES)
    parser.add_argument("-n", "--num-images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output prefix: OUT.json, OUT.png, OUT_strip.png")
    args = parser.parse_args()

    denoiser = load_generator(args.run, device="cpu")
    require_family(denoiser, "denoiser", "warm_start_passes.py")
    channels, size, _ = denoiser.image_shape()
    data = load_dataset(args.data, image_size=size, channels=channels, root=args.data_root,
                        max_images=args.max_images, progress=False)
    mean = mean_image(data[i] for i in range(len(data)))
    sample = torch.stack([data[i] for i in range(min(len(data), args.num_images))]).float().div(127.5).sub(1)
    data_to_mean, data_spread = rms(sample, mean).mean().item(), rms(sample, sample.mean(0)).mean().item()
    passes = [int(p) for p in args.passes.split(",")]
    rows = pass_distances(denoiser.network, mean, passes, args.num_images, args.seed, denoiser.image_shape())

    print(f"denoiser {args.run} (step {denoiser.step}), {args.num_images} noise images, mean of {len(data)} images")
    print(f"real images: RMS to the mean {data_to_mean:.4f}, spread {data_spread:.4f}")
    print(f"{'passes':>6} {'to mean':>8} {'spread':>8} {'step':>8}")
    for row in rows:
        print(f"{row['passes']:>6} {row['to_mean']:>8.4f} {row['spread']:>8.4f} {row['step']:>8.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"run": args.run, "step": denoiser.step, "num_images": args.num_images, "data": args.data,
         "data_images": len(data), "data_to_mean": data_to_mean, "data_spread": data_spread, "rows": rows},
        indent=2) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [row for row in rows if row["passes"] > 0]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    k = [row["passes"] for row in shown]
    axes[0].plot(k, [row["to_mean"] for row in shown], "o-", label="K-pass outputs to the mean image")
    axes[0].plot(k, [row["spread"] for row in shown], "s-", label="spread of the outputs")
    axes[0].axhline(data_to_mean, color="gray", ls="--", label="real images to the mean")
    axes[0].set_xscale("log"); axes[0].set_xlabel("passes K"); axes[0].set_ylabel("RMS distance (pixels in [-1, 1])")
    axes[0].legend(fontsize=8); axes[0].set_title("the mean-image effect")
    axes[1].plot(k, [row["step"] for row in shown], "o-", color="tab:red")
    axes[1].set_xscale("log"); axes[1].set_yscale("log"); axes[1].set_xlabel("pass K")
    axes[1].set_ylabel("RMS change made by pass K"); axes[1].set_title("convergence to a fixed point")
    figure.tight_layout(); figure.savefig(out.with_suffix(".png")); plt.close(figure)

    # The same 8 noise images after K passes, one row per K. (No row of the data's mean image: the figure
    # is committed, and nothing derived from the training data goes into the repository.)
    from difflab.viz.figures import labelled_grid
    from difflab.viz.grid import to_uint8
    strip_passes = [0, 1, 2, 3, 5, 10, 20, 50]
    noise = torch.randn(8, *denoiser.image_shape(), generator=noise_generator(args.seed, 0, torch.device("cpu")))
    with torch.no_grad():
        rows_images = [passes_from(denoiser.network, noise, p) for p in strip_passes]
    labels = [f"K={p}" for p in strip_passes]
    labelled_grid(torch.stack([to_uint8(r) for r in rows_images]), [f"#{i + 1}" for i in range(8)], labels,
                  scale=4).save(str(out) + "_strip.png")
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.png')}, {out}_strip.png")


if __name__ == "__main__":
    main()
