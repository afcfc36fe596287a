#!/usr/bin/env bash
# GPU call 1: CUDA smoke test of train/sample and the MNIST recipe sweep.
# Run on the device from the repo root with .data/ carried (anime zip, mnist, eval nets).
set -u
export PYTHONUNBUFFERED=1 DIFFLAB_SHARED=$PWD/.data-shared
mkdir -p .data-shared && ln -sfn $PWD/.data .data-shared/data && ln -sfn $PWD/.data/eval .data-shared/eval
export PYTHONPATH=$PWD/src; difflab() { python -m difflab.cli.main "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, accelerate; print('torch', torch.__version__, 'accelerate', accelerate.__version__)"
R=/tmp/runs; mkdir -p $R
for compile in no-compile compile; do
  timeout 240 difflab train .data/anime-5k.zip --out $R/anime-$compile --steps 300 --save-every 300 \
    --log-every 100 --grid-images 16 --$compile 2>&1 | grep -vE "it/s|step/s" | tail -4
  python - <<PY
import json; rows=[json.loads(l) for l in open("$R/anime-$compile/metrics.jsonl")]
print("$compile", [(r["step"], round(r["images_per_second"]), round(r["loss"],4)) for r in rows])
PY
done
timeout 200 difflab sample $R/anime-compile -n 1000 --batch-size 250 --steps 50 --out $R/s50 --no-progress
cp $R/s50/grid.png $OUT/anime-smoke-grid.png 2>/dev/null
timeout 240 python benchmarks/mnist_quality.py --sweep --minutes 0 --steps 1500 --device cuda \
  --only recipe,lr1e-3,pred_noise-linear,batch128 --json $OUT/mnist-sweep.jsonl
