#!/usr/bin/env bash
# Issues 15 and 16 on one GPU, in three calls on a warm machine (the runs of one part stay in .runs/
# for the next). Everything scored here, with the featnet features (../shared/eval/featnet.py), so
# no samples need to travel back; $OUT/results.tgz holds the metrics, tables, plots and grids.
#   PART=train   carry .gpu1 (anime-faces-64px-20k.zip, featnet.py + featnet-cifar10.safetensors,
#                lbpcascade_animeface.xml). Three runs at once, for MINUTES (default 8.3) each:
#                the diffusion defaults and the keras-lab recipe, both with the quality monitor
#                (issue 16: equal wall time, the same shared GPU), and the StyleGAN2 defaults (the
#                prior of issue 15's GAN rows; GAN=0 leaves it out).
#   PART=sample  carry .gpu3 (as .gpu2: anime-faces-96px-2k.zip, mnist/*.gz, featnet.py + featnet-mnist.safetensors).
#                1,000 DDIM-50 samples of the default and keras-lab runs' best checkpoints, scored;
#                issue 15's GAN-prior ablation on the anime faces (alone on the GPU); then, at once,
#                issue 16's memorisation run on the 2,000-image set (MEM_MINUTES, default 5) and the
#                MNIST diffusion model (recipe mnist-gpu-minute) and denoiser for issue 15.
#   PART=mnist   carry .gpu3. Issue 15's MNIST ablation (passes x DDPM steps) and the GAN-prior rows
#                at 5 steps, each alone on the GPU.
# DEVICE=cpu with small MINUTES/N runs the same commands on a CPU (a dry run of the plumbing).
# Issue 16's 20-minute run, in three calls of at most 10 minutes (the budget of one session): LONG=20
# starts the default arm in its own process session (setsid, so it outlives the call) for LONG minutes,
#   PART=train LONG=20     carry .gpu1: the default arm detached; keras-lab and StyleGAN2 for MINUTES;
#   PART=sample2 LONG=20   carry .gpu3: the 2,000-image memorisation run and the MNIST model and
#                          denoiser beside it; then the keras-lab run's best checkpoint, scored;
#   PART=final             carry .gpu3: waits for the default arm, scores its best checkpoint, then the
#                          GAN-prior and MNIST ablations (each alone on the GPU) in what is left of FINAL_S.
# The default arm shares the GPU with the other runs for most of its time; its log says with which.
# Carry (the device removes a folder carried in one call and not named in the next): build the folders
# with `python benchmarks/gpu/make_carry.py`; call 1 carries .gpu1, calls 2 and 3 (and PART=sample, mnist,
# mnist-all) carry .gpu3, which this script unpacks into .gpu1 (8,000 faces to score against) and .gpu2.
set -u
PART=${PART:?set PART=train, sample or mnist}
MINUTES=${MINUTES:-8.3}
N=${N:-1000}
DEVICE=${DEVICE:-cuda}
[ "$DEVICE" != cpu ] && [ -d .gpu3/g1 ] && { rm -rf .gpu1 .gpu2; mv .gpu3/g1 .gpu1; mv .gpu3/g2 .gpu2; }  # on the device only
ANIME=.gpu1/anime-faces-64px-20k.zip
CIFAR_FEATURES=.gpu1/featnet.py:cifar10
MNIST_FEATURES=.gpu2/featnet.py:mnist
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
difflab_within() {  # SECONDS (0 = no limit) ARGS
  local seconds=$1; shift; timeout $seconds python3 -m difflab.cli.main "$@" 2>&1 | grep -v -E "Warning|warn\(" ; }
difflab() { difflab_within 0 "$@"; }
(nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null || lscpu | grep "Model name")
R=.runs/out-r  # kept outside $OUT, packed into $OUT/results.tgz after every phase (a killed call still returns it)
mkdir -p .runs
pack() { tar czf $OUT/results.tgz -C .runs out-r; }
MONITOR="--eval-metric kid --eval-images $N --eval-features $CIFAR_FEATURES --eval-sampler-steps 20 --keep-best"
FEATURES="--features $CIFAR_FEATURES --detector-weights .gpu1/lbpcascade_animeface.xml"
SCORE="--real $ANIME $FEATURES"
keep() {  # run folder -> $R/<name>-*: its logs, plots and last grid
  local name=$(basename $1)
  for f in metrics.jsonl summary.json quality.png loss.png config.json; do cp $1/$f $R/$name-$f 2>/dev/null; done
  cp "$(ls $1/samples/*.png 2>/dev/null | tail -1)" $R/$name-last-grid.png 2>/dev/null
}
keep_ablation() {  # ablation folder: its tables and plot, and the first 8 images of every row
  local name=$(basename $1)
  for f in results.json results.md quality_vs_time.png; do cp $1/$f $R/$name-$f 2>/dev/null; done
  python3 - $1 $R/$name-rows.npz <<'PY'
import sys, numpy as np
from pathlib import Path
from PIL import Image
rows = {}
for folder in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    files = sorted(folder.glob("*.png"), key=lambda p: (len(p.stem), p.stem))[:8]
    if files:
        rows[folder.name] = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
np.savez_compressed(sys.argv[2], **rows)
PY
}
score_best() {  # run: 1,000 DDIM-50 samples of its best checkpoint, scored
  difflab sample $1 --weights best -n $N --sampler ddim --steps 50 --out $1-best50 --no-progress --device $DEVICE | tail -1
  difflab eval $1-best50 $ANIME $FEATURES --no-progress --json $R/$(basename $1)-best50-scores.json --device $DEVICE | tail -4
  cp $1-best50/difflab-sample.json $R/$(basename $1)-best50-manifest.json
}
side_runs() {  # MEM_MINUTES MNIST_MINUTES DIP_MINUTES, side by side: the 2,000-image memorisation run (0 = none),
               # the MNIST diffusion model and the report's denoiser (issue 15's models)
  local common="--steps 100000000 --log-every 200 --no-progress ${EXTRA:-}" pids= runs="mnist dip"
  if [ "$1" != 0 ]; then
    difflab train .gpu2/anime-faces-96px-2k.zip --image-size 64 --out .runs/anime2k --max-minutes $1 \
      $common --eval-every ${MEM_EVAL_EVERY:-1500} --holdout 200 $MONITOR > .runs/anime2k.log & pids="$!"; runs="anime2k $runs"
  fi
  difflab train mnist --data-root .gpu2/mnist --recipe mnist-gpu-minute --out .runs/mnist $common \
    --max-minutes $2 > .runs/mnist.log & pids="$pids $!"
  difflab train mnist --data-root .gpu2/mnist --model denoiser --out .runs/dip $common --image-size 28 --batch-size 256 \
    --max-minutes $3 > .runs/dip.log & pids="$pids $!"
  wait $pids
  for run in $runs; do echo "== $run"; tail -4 .runs/$run.log; keep .runs/$run; cp .runs/$run.log $R/; done
  pack
}
gan_prior_ablation() {  # SECONDS STEPS [options]: issue 15's GAN-prior rows on the anime faces, alone on the GPU
  local seconds=$1 steps=$2; shift 2
  difflab_within $seconds ablate-warm-start .runs/default --prior .runs/gan --start-t 50,100,200,400 \
    --sampler ddim,dpmpp-2m --steps $steps "$@" -n $N --batch-size 250 $SCORE --out .runs/gan-prior-steps$steps \
    --no-progress --device $DEVICE | tail -30
  keep_ablation .runs/gan-prior-steps$steps; pack
}
mnist_ablation() {  # SECONDS: issue 15's MNIST ablation (passes x DDPM steps), alone on the GPU
  python3 - .gpu2/mnist .runs/mnist-real <<'PY'
import sys
from pathlib import Path
from PIL import Image
from difflab.data.mnist import find_mnist_file, read_idx_images
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
for i, image in enumerate(read_idx_images(find_mnist_file([Path(sys.argv[1])], "test"))[:5000]):
    Image.fromarray(image).save(out / f"{i}.png")
PY
  echo "== MNIST ablation within $1 s"
  difflab_within $1 ablate-warm-start .runs/mnist --prior .runs/dip --passes 0,1,2,3,5,10,20,50 \
    --start-t ${MNIST_T0:-100,300,600,999} --sampler ddpm -n ${MNIST_N:-$N} --batch-size ${MNIST_N:-$N} \
    --real .runs/mnist-real --features $MNIST_FEATURES --digits $MNIST_FEATURES --afd off --compile ${MNIST_COMPILE:-off} \
    --out .runs/mnist-ablation --no-progress --device $DEVICE | tail -60
  keep_ablation .runs/mnist-ablation; pack
}
packer() {  # pack every 20 s: a call stopped at its limit still returns what was finished
  ( while sleep 20; do pack; done ) > /dev/null 2>&1 &
  trap "kill $! 2>/dev/null" EXIT
}
PLAIN=ddim:5,ddim:20,ddim:50,dpmpp-2m:5,dpmpp-2m:20
case $PART in
  train)
    rm -rf .runs/*; mkdir -p $R
    common="--max-minutes $MINUTES --steps 100000000 --log-every 200 --no-progress ${EXTRA:-}"
    logger=$(python3 -c "import tensorboard" 2>/dev/null && echo tensorboard || echo none)
    echo "default arm: --logger $logger"
    if [ "${LONG:-0}" != 0 ]; then  # the default arm outlives this call (see the header)
      setsid nohup python3 -m difflab.cli.main train $ANIME --out .runs/default ${common/--max-minutes $MINUTES/--max-minutes $LONG} \
        --eval-every ${EVAL_EVERY:-3000} --holdout 500 $MONITOR --logger $logger > .runs/default.log 2>&1 < /dev/null &
      echo $! > .runs/default.pid
    else
      difflab train $ANIME --out .runs/default $common --eval-every ${EVAL_EVERY:-2000} --holdout 500 $MONITOR \
        --logger $logger > .runs/default.log &
    fi
    difflab train $ANIME --recipe keras-lab --out .runs/keras $common --eval-every ${KERAS_EVAL_EVERY:-3000} \
      --holdout 500 $MONITOR > .runs/keras.log &
    keras_pid=$!; gan_pid=
    [ "${GAN:-1}" = 1 ] && { difflab train $ANIME --model stylegan2 --out .runs/gan $common > .runs/gan.log & gan_pid=$!; }
    if [ "${LONG:-0}" != 0 ]; then wait $keras_pid $gan_pid 2>/dev/null; else wait; fi
    for run in default keras gan; do echo "== $run"; tail -5 .runs/$run.log; keep .runs/$run; cp .runs/$run.log $R/; done
    ls .runs/default/logs/* | head -3 ;;
  sample)  # the old layout's call 2
    mkdir -p $R; for run in default keras; do score_best .runs/$run; done; pack
    gan_prior_ablation 0 10 --plain $PLAIN
    side_runs ${MEM_MINUTES:-5} ${MNIST_MINUTES:-1} ${DIP_MINUTES:-1}
    mnist_ablation ${MNIST_ABLATION_S:-330} ;;
  sample2)  # LONG layout, call 2 (the default arm still training)
    mkdir -p $R
    side_runs ${MEM_MINUTES:-7} ${MNIST_MINUTES:-2} ${DIP_MINUTES:-1.5}
    score_best .runs/keras
    echo "== default (still training)"; tail -3 .runs/default.log; keep .runs/default; cp .runs/default.log $R/ ;;
  final)  # LONG layout, call 3
    mkdir -p $R; packer
    pid=$(cat .runs/default.pid 2>/dev/null)
    while [ -n "$pid" ] && kill -0 $pid 2>/dev/null; do sleep 5; done
    echo "== default"; tail -5 .runs/default.log; keep .runs/default; cp .runs/default.log $R/
    score_best .runs/default; pack
    # what is left of this call (FINAL_S, default 570 s) goes 2:3 to the GAN-prior and MNIST ablations;
    # each writes results.json row by row, so one stopped by its timeout keeps the rows it finished
    left=$(( ${FINAL_S:-570} - SECONDS )); gan_s=$(( left * 2 / 5 )); [ $gan_s -gt ${GAN_ABLATION_S:-240} ] && gan_s=${GAN_ABLATION_S:-240}
    echo "== $left s left: GAN-prior ablation within $gan_s s"
    gan_prior_ablation $gan_s 10 --plain $PLAIN
    mnist_ablation $(( ${FINAL_S:-570} - SECONDS - 15 )) ;;
  mnist-all)  # one call, carry .gpu2 only: the MNIST model and the denoiser side by side, then the MNIST ablation alone
    mkdir -p $R; packer
    side_runs 0 ${MNIST_MINUTES:-1.5} ${DIP_MINUTES:-1.5}
    mnist_ablation $(( ${FINAL_S:-570} - SECONDS - 15 )) ;;
  mnist)  # the old layout's call 3
    mkdir -p $R
    mnist_ablation ${MNIST_ABLATION_S:-330}
    gan_prior_ablation 0 5 --no-baselines ;;
esac
pack
ls -la $OUT
