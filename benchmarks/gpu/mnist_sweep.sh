#!/usr/bin/env bash
# MNIST recipe sweep on the GPU at fixed step counts, the variants in parallel (a small eager
# network leaves the GPU mostly idle, and a fixed step count makes the result independent of
# the sharing). VARIANTS is "name:steps ..."; steps = 480 s / the variant's CPU seconds per step
# (mnist_quality.CPU_SECONDS_PER_STEP) makes each row stand for 8 CPU minutes.
# Each variant gets SWEEP_S seconds (default 360). Carry .data-mnist (data/mnist/train-images-idx3-ubyte.gz, eval/featnet.py, eval/featnet-mnist.safetensors).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src DIFFLAB_SHARED=.data-mnist
VARIANTS=${VARIANTS:-"recipe:1950 cos:1950 cos-lr2e-3:1950 cos-lr4e-3:1950"}
for item in $VARIANTS; do
  name=${item%%:*}; steps=${item##*:}
  timeout ${SWEEP_S:-360} python3 benchmarks/mnist_quality.py --minutes 0 --steps $steps --device cuda --sweep --only $name \
    --samplers "${SAMPLERS:-}" --json /tmp/mnist-sweep-$name.jsonl >/tmp/sweep-$name.log 2>&1 &
done
wait
grep -h -v Warn /tmp/sweep-*.log | grep -v "^variant" | sort
cat /tmp/mnist-sweep-*.jsonl > $OUT/mnist-sweep.jsonl
