#!/usr/bin/env bash
# MNIST recipe sweep on the GPU at fixed step counts, the variants in parallel (a small eager
# network leaves the GPU mostly idle, and a fixed step count makes the result independent of
# the sharing). VARIANTS is "name:steps[:seed] ..."; steps = 480 s / the variant's CPU seconds per
# step (mnist_quality.CPU_SECONDS_PER_STEP) makes each row stand for 8 CPU minutes.
# Each variant gets SWEEP_S seconds (default 360). With GUIDES (e.g. "0.25:3.5 0.4:3.5", FRACTION or
# STEP:WEIGHT), each kept run is then also scored with those guides (benchmarks/mnist_guidance.py).
# Carry .data-mnist (data/mnist/train-images-idx3-ubyte.gz, eval/featnet.py, eval/featnet-mnist.safetensors).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src DIFFLAB_SHARED=.data-mnist
VARIANTS=${VARIANTS:-"recipe:1950 cos:1950 cos-lr2e-3:1950 cos-lr4e-3:1950"}
RUNS=.runs/mnist-sweep
rm -rf $RUNS /tmp/sweep-*.log /tmp/mnist-sweep-*.jsonl /tmp/guides-*.jsonl; mkdir -p $RUNS
for item in $VARIANTS; do
  IFS=: read -r name steps seed <<<"$item"
  tag=$name${seed:+-seed$seed}
  (timeout ${SWEEP_S:-360} python3 benchmarks/mnist_quality.py --minutes 0 --steps $steps --device cuda --sweep --only $name \
    ${seed:+--seed $seed} --keep-runs $RUNS --samplers "${SAMPLERS:-}" --json /tmp/mnist-sweep-$tag.jsonl >/tmp/sweep-$tag.log 2>&1
   if [ -n "${GUIDES:-}" ]; then
     python3 benchmarks/mnist_guidance.py $RUNS/$tag $GUIDES --device cuda --json /tmp/guides-$tag.jsonl >>/tmp/sweep-$tag.log 2>&1
   fi) &
done
wait
grep -h -v Warn /tmp/sweep-*.log | grep -v "^variant" | sort
cat /tmp/mnist-sweep-*.jsonl > $OUT/mnist-sweep.jsonl
cat /tmp/guides-*.jsonl > $OUT/mnist-guides.jsonl 2>/dev/null
true
