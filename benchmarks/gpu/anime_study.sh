#!/usr/bin/env bash
# Issue 4 acceptance on the GPU: the DDPM-versus-DDIM study on the model that
# benchmarks/gpu/anime_difflab.sh left in .runs/gpu-anime (same warm machine), 1,000 images per
# row, scored with FD in featnet-cifar10 features, KID and AFD against the 20k training faces,
# plus the progressive-generation figures and the report. Carry .data and .gpu-eval
# (featnet.py, featnet-cifar10.safetensors, lbpcascade_animeface.xml copied from ../shared).
set -u
RUN=.runs/gpu-anime
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
test -d $RUN/checkpoints || { echo "no $RUN: run anime_difflab.sh first on this machine"; exit 1; }
python3 -m difflab.cli.main compare $RUN --samplers ${SAMPLERS:-ddpm,ddim:100,ddim:50,ddim:20,ddim:10} -n ${N:-1000} \
  --real .data/anime-faces-64px-20k.zip --features .gpu-eval/featnet.py:${FEATURES_FN:-cifar10} \
  --detector-weights .gpu-eval/lbpcascade_animeface.xml --format jpg --out .runs/study --overwrite --no-progress \
  2>&1 | grep -v Warning
python3 -m difflab.cli.main progress $RUN -n 5 --frames 10 --sampler ddpm --out $OUT/progress-ddpm.png --no-progress
python3 -m difflab.cli.main progress $RUN -n 5 --frames 10 --sampler ddim --steps 50 --show-x0 \
  --out $OUT/progress-ddim.png --no-progress
python3 -m difflab.cli.main report $RUN --study .runs/study --progress $OUT/progress-ddim.png --out $OUT/report.html \
  --overwrite 2>&1 | tail -2
cp .runs/study/results.json .runs/study/results.md .runs/study/quality_vs_time.png $OUT/ 2>/dev/null
cp .runs/study/*.png $OUT/ 2>/dev/null
ls $OUT
