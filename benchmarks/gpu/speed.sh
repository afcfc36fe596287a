#!/usr/bin/env bash
# Issue 5 on the GPU in one call: difflab vs denoising-diffusion-pytorch (training at batch 64 and
# 256, DDIM-50 sampling), the CUDA-graphs A/B of the eager training step, and the MNIST
# one-GPU-minute benchmark (issue 2). Carry .whl (peer wheels) and .data-small (MNIST + featnet).
# Issue 17's table: EXTRAS=0 PARTS=train,train-default,sample-ddim TABLE_S=560 (carry .whl only).
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${EXTRAS:-1}" = 1 ]; then  # EXTRAS=0: only the table (issue 17; no .data-small needed)
timeout 60 python3 benchmarks/bench_train.py --device cuda --preset base-64 --batch 64 --steps 10 --warmup 3 \
  --ab eager,eager-graphs --repeats 2 --json-out $OUT/train-ab.json 2>&1 | grep -v Warn | tail -6
DIFFLAB_SHARED=.data-small timeout 105 python3 benchmarks/mnist_quality.py --minutes 1 --device cuda --sweep \
  --only ${MNIST_VARIANTS:-b512-ch64-lr2e-3} --json $OUT/mnist-gpu.jsonl 2>&1 | grep -v Warn
fi
timeout ${TABLE_S:-400} python3 benchmarks/bench_all.py --parts ${PARTS:-train,sample-ddim} --compile --out /tmp/bench-all 2>&1 | grep -v Warn \
  | tail -25
python3 -c "import shutil; shutil.make_archive('$OUT/bench-all', 'zip', '/tmp/bench-all')"
