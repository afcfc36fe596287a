#!/usr/bin/env bash
# Issue 17, item 3: the cold and warm compile of the default 64 px network's training step (batch 64),
# whole against blocks (regional compilation), with and without per-block CUDA graphs, each in fresh
# processes and fresh cache folders (benchmarks/compile_time.py). No carry needed; about 6 minutes.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 570 python3 benchmarks/compile_time.py --batch 64 --variants whole:auto,blocks:auto,blocks:off \
  --out $OUT/compile-time 2>&1 | grep -v Warn
