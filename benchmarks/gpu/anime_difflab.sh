#!/usr/bin/env bash
# GPU acceptance run (issue 2), difflab side: train with the defaults on the 20k anime faces for a
# fixed wall-clock budget, then sample 1,000 images with DDIM-50 from the EMA weights.
# Carry: .data (anime-faces-64px-20k.zip). The run stays in .runs/gpu-anime (ignored) on the
# warm machine, for benchmarks/gpu/anime_study.sh in the next call.
set -u
MINUTES=${MINUTES:-7}
RUN=.runs/gpu-anime
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
rm -rf $RUN .runs/gpu-anime-ddim50
# A 20-second gate: a CUDA bug should cost seconds, not the whole budget.
python3 -m difflab.cli.main train .data/anime-faces-64px-20k.zip --out /tmp/gate --steps 10 --save-every 10 \
  --channels 32 --max-images 512 --grid-images 4 --grid-sampler-steps 2 --compile off --no-progress >/tmp/gate.log 2>&1 \
  && python3 -m difflab.cli.main sample /tmp/gate -n 8 --steps 5 --out /tmp/gate-samples --no-progress >>/tmp/gate.log 2>&1 \
  || { tail -30 /tmp/gate.log; exit 1; }
echo "gate ok"
python3 -m difflab.cli.main train .data/anime-faces-64px-20k.zip --out $RUN --max-minutes $MINUTES --steps 1000000 \
  --save-every 1000000 --log-every 500 --no-progress ${TRAIN_FLAGS:-} 2>&1 | grep -v Warning
python3 -m difflab.cli.main sample $RUN -n 1000 --sampler ddim --steps 50 --batch-size 250 --out .runs/gpu-anime-ddim50 \
  --no-progress
python3 -c "import shutil; shutil.make_archive(\"$OUT/difflab-ddim50-samples\", \"zip\", \".runs/gpu-anime-ddim50\")"
cp $RUN/metrics.jsonl $RUN/config.json $RUN/summary.json $RUN/loss.png $OUT/
cp .runs/gpu-anime-ddim50/grid.png $OUT/difflab-ddim50-grid.png
cp .runs/gpu-anime-ddim50/difflab-sample.json $OUT/difflab-ddim50-sample.json
python3 - <<'PY'
import json; rows = [json.loads(l) for l in open(".runs/gpu-anime/metrics.jsonl")]
print("steps", rows[-1]["step"], "median img/s", sorted(r["images_per_second"] for r in rows)[len(rows)//2],
      "final loss", round(rows[-1]["loss"], 4), "seconds", round(rows[-1]["seconds"], 1))
PY
