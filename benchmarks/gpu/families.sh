#!/usr/bin/env bash
# Issue 14's acceptance on one GPU: the same 20k anime faces, the same wall-clock budget, three trainers.
#   PART=gan        difflab --model stylegan2 at its defaults; 1,000 samples at psi 1 and psi 0.75
#   PART=lucidrains lucidrains' stylegan2_pytorch 1.9.0 at its CLI defaults (--image-size 64); the same samples
#                   from its EMA generator GE (what its --generate uses) and from its raw generator G
#   PART=diffusion  difflab's diffusion defaults; DDIM-50 samples unguided and autoguided (weight 2.5)
# Each part trains for MINUTES (default 8) and writes to $OUT: the samples as uint8 .npz (scored on
# the CPU by benchmarks/score_samples.py, so the feature network need not travel), metrics, manifests
# and grids. Carry .data (anime-faces-64px-20k.zip) and, for PART=lucidrains, .whl (its wheels, unpacked by
# benchmarks/peers/lucidrains_stylegan2.py). SAMPLES (default 1000) sets the images per set.
set -u
MINUTES=${MINUTES:-8}
PART=${PART:?set PART=gan, lucidrains or diffusion}
DATA=.data/anime-faces-64px-20k.zip
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
pack() {  # folder, name: the folder's numbered PNGs as one uint8 (N, H, W, C) array
  python3 - "$1" "$OUT/$2.npz" <<'PY'
import sys, numpy as np
from pathlib import Path
from PIL import Image
files = sorted(Path(sys.argv[1]).glob("*.png"), key=lambda p: (len(p.stem), p.stem))
files = [f for f in files if f.stem.isdigit()]
np.savez_compressed(sys.argv[2], images=np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))
print(f"packed {len(files)} images from {sys.argv[1]}")
PY
}
sample() {  # run, name, extra flags: 1,000 PNGs, timed by difflab (manifest), packed
  python3 -m difflab.cli.main sample "$1" -n ${SAMPLES:-1000} --format png --out .runs/s-$2 --no-progress "${@:3}" 2>&1 | grep -v Warning | tail -2
  cp .runs/s-$2/difflab-sample.json $OUT/$2-manifest.json; pack .runs/s-$2 $2
}
finish() {  # run
  cp $1/metrics.jsonl $1/summary.json $OUT/ 2>/dev/null
  cp "$(ls $1/samples/*.png | tail -1)" $OUT/last-grid.png 2>/dev/null
}
rm -rf .runs
case $PART in
  gan)
    python3 -m difflab.cli.main train $DATA --model stylegan2 --out .runs/gan --image-size 64 --max-minutes $MINUTES \
      --steps 100000000 --log-every 200 --no-progress 2>&1 | grep -v Warning | tail -4
    sample .runs/gan gan-psi1
    sample .runs/gan gan-psi075 --truncation 0.75
    finish .runs/gan ;;
  diffusion)
    python3 -m difflab.cli.main train $DATA --out .runs/ddpm --max-minutes $MINUTES --steps 100000000 \
      --save-every 1000 --keep-checkpoints 1000 --log-every 500 --no-progress 2>&1 | grep -v Warning | tail -4
    sample .runs/ddpm ddim50 --sampler ddim --steps 50
    sample .runs/ddpm ddim50-guided --sampler ddim --steps 50 --guide auto --guidance 2.5
    finish .runs/ddpm ;;
  lucidrains)
    python3 benchmarks/peers/lucidrains_stylegan2.py --data $DATA --minutes $MINUTES --image-size 64 --wheels .whl \
      --out .runs/lucid --num-samples ${SAMPLES:-1000} --weights ema,model 2>&1 | grep -v Warning | tail -6
    for psi in 1 0.75; do
      pack .runs/lucid/samples_ema_psi$psi lucid-psi${psi/./}          # GE: what its --generate samples
      pack .runs/lucid/samples_model_psi$psi lucid-raw-psi${psi/./}    # G, the raw generator
    done
    cp .runs/lucid/result.json $OUT/lucid-result.json 2>/dev/null ;;
esac
ls -la $OUT
