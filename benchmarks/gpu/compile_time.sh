#!/usr/bin/env bash
# Issue 17, item 3: the cold and warm compile of the default 64 px network's training step (batch 64),
# whole against blocks (regional compilation), each in fresh processes and fresh cache folders
# (benchmarks/compile_time.py); then each speed lever in LEVERS (boolean run options) as one more cold
# whole-network process, an A/B of its steady step. No carry needed; about 6-7 minutes.
#   VARIANTS (default whole:auto,blocks:auto; add blocks:off for blocks without CUDA graphs)
#   LEVERS (default channels_last,cudnn_benchmark; empty for none)   LIMIT_S (default 570)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout ${LIMIT_S:-570} python3 benchmarks/compile_time.py --batch 64 --variants ${VARIANTS:-whole:auto,blocks:auto} \
  --levers "${LEVERS-channels_last,cudnn_benchmark}" --out $OUT/compile-time 2>&1 | grep -v Warn
