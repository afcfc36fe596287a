"""Sample sets side by side: the first K images of each set as one labelled row, in one PNG.

The sets are the uint8 (N, H, W, C) .npz files the GPU scripts bring back (e.g.
benchmarks/gpu/families.sh), so every row shows the same seeds its tool drew first.

    python benchmarks/sample_strips.py --out three-models.png --count 10 \
        "difflab StyleGAN2, psi 1=gan-psi1.npz" "diffusion, DDIM-50=ddim50.npz" ...
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LABEL_WIDTH = 230


def strips(rows: list[tuple[str, np.ndarray]], count: int, gap: int = 2) -> Image.Image:
    size = rows[0][1].shape[1]
    width = LABEL_WIDTH + count * (size + gap)
    canvas = Image.new("RGB", (width, len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        top = r * (size + gap)
        draw.text((6, top + size // 2 - 6), label, fill="black")
        for c, image in enumerate(images[:count]):
            tile = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).convert("RGB")
            canvas.paste(tile.resize((size, size)), (LABEL_WIDTH + c * (size + gap), top))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="+", help="LABEL=FILE.npz, one per row")
    parser.add_argument("--count", type=int, default=10, help="images per row")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    rows = []
    for spec in args.sets:
        label, _, path = spec.rpartition("=")
        with np.load(path, allow_pickle=False) as stored:
            rows.append((label or Path(path).stem, stored["images"][: args.count]))
    strips(rows, args.count).save(args.out)
    print(f"wrote {args.out}: {len(rows)} rows of {args.count}")


if __name__ == "__main__":
    main()
