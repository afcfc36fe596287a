#!/usr/bin/env bash
# Issue 2's GPU goal: the MNIST "gpu-minute" variant trained for one minute of wall clock, alone on
# the GPU, once per seed in SEEDS (default "0 1 2"); each run scored with the benchmark's rows, then
# with the guides in GUIDES (default "0.2:3.5 0.3:3.5 0.4:3.5"; FRACTION:WEIGHT[:MIN_T]). VARIANT picks
# another mnist_quality.SWEEP variant (default gpu-minute). Carry .data-mnist.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src DIFFLAB_SHARED=.data-mnist
RUNS=.runs/mnist-minute
rm -rf $RUNS; mkdir -p $RUNS
nvidia-smi --query-gpu=name --format=csv,noheader
for seed in ${SEEDS:-0 1 2}; do
  python3 benchmarks/mnist_quality.py --minutes 1 --device cuda --sweep --only ${VARIANT:-gpu-minute} --guide-fraction 0.2 \
    --guide-min-t 200 --seed $seed --keep-runs $RUNS --json $OUT/mnist-minute.jsonl 2>&1 | grep -v Warn
  python3 benchmarks/mnist_guidance.py $RUNS/${VARIANT:-gpu-minute}-seed$seed ${GUIDES:-0.2:3.5 0.3:3.5 0.4:3.5} --device cuda \
    --json $OUT/mnist-minute-guides.jsonl 2>&1 | grep -v Warn
done
