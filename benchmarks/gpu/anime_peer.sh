#!/usr/bin/env bash
# GPU acceptance run (issue 2), peer side: denoising-diffusion-pytorch with its README defaults on the
# same data for the same wall-clock budget, then 1,000 DDIM-50 samples from its EMA weights.
# Carry: .data (anime-faces-64px-20k.zip) and .whl (the peer's wheels).
set -u
MINUTES=${MINUTES:-7}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
nvidia-smi --query-gpu=name --format=csv,noheader
python3 benchmarks/peers/lucidrains_ddpm.py train --data .data/anime-faces-64px-20k.zip --minutes $MINUTES \
  --batch 64 --out /tmp/ddp 2>&1 | grep -vE "it/s|Warning" | tail -15
python3 -c "import shutil; shutil.make_archive(\"$OUT/peer-ddim50-samples\", \"zip\", \"/tmp/ddp/samples\")"
cp /tmp/ddp/grid.png $OUT/peer-ddim50-grid.png; cp /tmp/ddp/result.json $OUT/peer-result.json
cp /tmp/ddp/metrics.jsonl $OUT/peer-metrics.jsonl
