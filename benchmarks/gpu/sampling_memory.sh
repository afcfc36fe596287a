#!/usr/bin/env bash
# Issue 5 on the GPU, the sampling targets and memory in one call (about 8 minutes on an H200):
# DDIM-50 (1,000 images, batch 250) and DDPM-1000 (1,000 images, batch $DDPM_BATCH) against
# denoising-diffusion-pytorch, then the largest training batch at 64 and 128 px on both sides.
# Carry .whl (the peer wheels). Writes $OUT/bench-all.zip (tables, JSON, logs).
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout ${BUDGET_S:-560} python3 benchmarks/bench_all.py --parts ${PARTS:-sample-ddim,sample-ddpm,max-batch} --compile \
  --ddpm-batch ${DDPM_BATCH:-1000} --timeout 300 --out /tmp/bench-all 2>&1 | grep -v Warn | tail -${TAIL:-45}
python3 -c "import shutil; shutil.make_archive('$OUT/bench-all', 'zip', '/tmp/bench-all')"
cp /tmp/bench-all/bench-all.md $OUT/ 2>/dev/null
