#!/usr/bin/env bash
# Autoguidance on the anime faces: a fresh MINUTES-minute model of difflab's defaults (checkpoints
# kept every 1,000 steps for the guide), then `difflab compare` rows of DDIM-50, unguided and
# guided (weight W, guide at 40% of the steps) with --guide-min-t 0 and each value in MIN_TS.
# FD and KID in featnet-cifar10 features against the 20k faces. Carry .data and .gpu-eval.
set -u
MINUTES=${MINUTES:-4}
W=${W:-2.5}
RUN=.runs/gpu-anime-guided
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
rm -rf $RUN .runs/anime-guided-*
python3 -m difflab.cli.main train .data/anime-faces-64px-20k.zip --out $RUN --max-minutes $MINUTES --steps 1000000 \
  --save-every 1000 --keep-checkpoints 100 --log-every 500 --no-progress 2>&1 | grep -v Warning | tail -3
compare() {  # name, extra sampling flags
  python3 -m difflab.cli.main compare $RUN --samplers ddim:50 -n 1000 --real .data/anime-faces-64px-20k.zip \
    --features .gpu-eval/featnet.py:cifar10 --out .runs/anime-guided-$1 --no-progress "${@:2}" 2>&1 | grep -v Warning | tail -4
  cp .runs/anime-guided-$1/*.json $OUT/anime-guided-$1.json 2>/dev/null
}
compare unguided
compare min-t-0 --guide auto --guidance $W --guide-min-t 0
for min_t in ${MIN_TS:-100 200}; do compare min-t-$min_t --guide auto --guidance $W --guide-min-t $min_t; done
