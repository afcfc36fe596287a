#!/usr/bin/env bash
# GPU acceptance run (issue 2), difflab side: train with the defaults on the 20k anime faces for a
# fixed wall-clock budget, then sample 1,000 images with DDIM-50 from the EMA weights.
# Carry: .data (anime-faces-64px-20k.zip) and .whl (pytorch-fid, for the Inception equivalence check).
set -u
MINUTES=${MINUTES:-7}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
difflab() { python -m difflab.cli.main "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
git rev-parse --short HEAD 2>/dev/null
# A 20-second gate: a CUDA bug should cost seconds, not the whole budget.
difflab train .data/anime-faces-64px-20k.zip --out /tmp/gate --steps 10 --save-every 10 --channels 32 \
  --max-images 512 --grid-images 4 --grid-sampler-steps 2 --compile off --no-progress >/tmp/gate.log 2>&1 \
  && difflab sample /tmp/gate -n 8 --steps 5 --out /tmp/gate-samples --no-progress >>/tmp/gate.log 2>&1 \
  || { tail -30 /tmp/gate.log; exit 1; }
echo "gate ok"
difflab train .data/anime-faces-64px-20k.zip --out /tmp/anime --max-minutes $MINUTES --steps 1000000 \
  --save-every 1000000 --log-every 500 --no-progress 2>&1 | grep -v Warning
difflab sample /tmp/anime -n 1000 --sampler ddim --steps 50 --batch-size 250 --out /tmp/anime-ddim50 --no-progress
python3 -c "import shutil; shutil.make_archive(\"$OUT/difflab-ddim50-samples\", \"zip\", \"/tmp/anime-ddim50\")"
cp /tmp/anime/metrics.jsonl /tmp/anime/config.json /tmp/anime/summary.json /tmp/anime/loss.png $OUT/
cp /tmp/anime-ddim50/grid.png $OUT/difflab-ddim50-grid.png
python - <<'PY'
import json; rows = [json.loads(l) for l in open("/tmp/anime/metrics.jsonl")]
print("steps", rows[-1]["step"], "median img/s", sorted(r["images_per_second"] for r in rows)[len(rows)//2],
      "final loss", round(rows[-1]["loss"], 4), "seconds", round(rows[-1]["seconds"], 1))
PY
# Issue 3: the Inception port against pytorch-fid with shared random weights.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/pytorch_fid-0.3.0-py3-none-any.whl && PYTHONPATH=/tmp/site:src timeout 100 \
  python3 benchmarks/inception_equivalence.py --data .data/anime-faces-64px-20k.zip 2>&1 | grep -v 'it/s' \
  | tee $OUT/inception-equivalence.txt | tail -25
