#!/usr/bin/env bash
# Issue 5: in-process A/B of difflab's fast paths on the GPU (training step and sampling), then
# the MNIST one-GPU-minute benchmark with the compiled, CUDA-graphed step. Carry .data-small.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 200 python3 benchmarks/bench_sample.py --device cuda --preset base-64 --n 1000 --batch 250 --steps 50 \
  --ab eager-autocast,eager,eager-graphs,compiled-graphs --repeats 2 --ab-calls 1 \
  --json-out $OUT/sample-ab.json 2>&1 | grep -v Warn
timeout 240 python3 benchmarks/bench_train.py --device cuda --preset base-64 --batch 64 --steps 20 --warmup 3 \
  --ab eager,compiled-graphs --repeats 3 --json-out $OUT/train-ab.json 2>&1 | grep -v Warn
DIFFLAB_SHARED=.data-small timeout 200 python3 benchmarks/mnist_quality.py --minutes 1 --device cuda --sweep \
  --only b512-ch64-lr2e-3-compiled --json $OUT/mnist-gpu.jsonl 2>&1 | grep -v Warn
