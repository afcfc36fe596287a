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
# Issue 16's 20-minute run and issue 15's GAN prior, in three calls of at most 10 minutes (the budget of
# one session). Each long run starts in its own process session (setsid), so it outlives the call:
#   PART=long1  carry .gpu1: the default arm (LONG minutes, default 20, the monitor every EVAL_EVERY
#               steps) and StyleGAN2 (GAN_MINUTES, default 10), side by side; then watches them until CALL_S.
#   PART=long2  carry .gpu3: the 2,000-image memorisation run (MEM_MINUTES, default 10.5), detached; once
#               the GAN has finished, the GAN-prior ablation on a snapshot of the default arm (a fallback:
#               its times are shared); then watches the runs until CALL_S.
#   PART=long3  carry .gpu3: waits for both long runs, then the GAN-prior ablation on the finished default
#               arm, alone on the GPU, at 10 and then 5 steps, within FINAL_S.
#   PART=mem1, then mem2 (carry .gpu3 both): the 2,000-image memorisation run alone on the GPU for
#               MEM_MINUTES (default 20), across two calls (what session 11's shared 10.5 minutes could not show).
# The default arm shares the GPU for most of its time (with the GAN, then the memorisation run); its
# monitor's curve is therefore given in steps too.
# Carry (the device removes a folder carried in one call and not named in the next): build the folders
# with `python benchmarks/gpu/make_carry.py`; call 1 carries .gpu1, calls 2 and 3 (and PART=sample, mnist,
# mnist-all) carry .gpu3, which this script unpacks into .gpu1 (8,000 faces to score against) and .gpu2.
# A run keeps its data and feature network in memory, so the unpacking does not disturb one in flight.
set -u
PART=${PART:?set PART=train, sample, mnist, mnist-all, long1, long2, long3, mem1 or mem2}
MINUTES=${MINUTES:-8.3}
N=${N:-1000}
DEVICE=${DEVICE:-cuda}
[ "$DEVICE" != cpu ] && [ -d .gpu3/g1 ] && { rm -rf .gpu1 .gpu2; mv .gpu3/g1 .gpu1; mv .gpu3/g2 .gpu2; }  # on the device only
ANIME=${ANIME:-.gpu1/anime-faces-64px-20k.zip}  # ANIME= a smaller set for a CPU dry run
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
# AFD off by default: the device has OpenCV 5.0, which has no CascadeClassifier (session 11)
FEATURES="--features $CIFAR_FEATURES ${AFD_OPTIONS:---afd off}"  # AFD_OPTIONS="--detector-weights .gpu1/lbpcascade_animeface.xml" with OpenCV < 5
SCORE="--real $ANIME $FEATURES"
keep() {  # run folder -> $R/<name>-*: its logs, plots and last grid
  local name=$(basename $1)
  for f in metrics.jsonl summary.json quality.png loss.png config.json; do cp $1/$f $R/$name-$f 2>/dev/null; done
  cp "$(ls $1/samples/*.png 2>/dev/null | tail -1)" $R/$name-last-grid.png 2>/dev/null
}
keep_ablation() {  # ablation folder: its tables and plot, and the first 8 images of every row
  local name=$(basename $1); [ -d $1 ] || return 0
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
gan_prior_ablation() {  # SECONDS STEPS RUN NAME [options]: issue 15's GAN-prior rows on the anime faces
  # (eager by default: a cold compile of the sampler would cost a minute of the call; every row alike)
  local seconds=$1 steps=$2 run=$3 name=$4; shift 4
  echo "== GAN-prior ablation of $run at $steps steps within $seconds s"
  difflab_within $seconds ablate-warm-start $run --prior .runs/gan --start-t 50,100,200,400 \
    --sampler ddim,dpmpp-2m --steps $steps "$@" -n $N --batch-size 250 $SCORE --out .runs/$name \
    --compile ${ABLATION_COMPILE:-off} \
    --no-progress --device $DEVICE | tail -30
  keep_ablation .runs/$name; pack
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
detach() {  # NAME ARGS: `difflab ARGS` in its own process session (it outlives this call), pid in .runs/NAME.pid
  local name=$1; shift
  setsid nohup python3 -m difflab.cli.main "$@" > .runs/$name.log 2>&1 < /dev/null &
  echo $! > .runs/$name.pid
}
running() { local pid=$(cat .runs/$1.pid 2>/dev/null); [ -n "$pid" ] && kill -0 $pid 2>/dev/null; }
finish() { while running $1; do sleep 5; done; echo "== $1"; grep -v -E "Warning|warn\(" .runs/$1.log | tail -4; keep .runs/$1; cp .runs/$1.log $R/; pack; }
watch_runs() {  # UNTIL_SECONDS RUN...: keep and pack the runs every 30 s until this call's SECONDS reach UNTIL
  local until=$1 last=-999; shift
  while [ $SECONDS -lt $until ]; do
    for run in "$@"; do keep .runs/$run; cp .runs/$run.log $R/ 2>/dev/null; done; pack
    if [ $(( SECONDS - last )) -ge 120 ]; then
      last=$SECONDS; for run in "$@"; do echo "[$SECONDS s] $run: $(grep -E '^step|eval' .runs/$run.log | tail -1 | cut -c1-150)"; done
    fi
    sleep 30
  done
}
snapshot() {  # RUN FILE: a copy of the run's newest checkpoint (the run goes on writing and rotating its own)
  python3 -c "import shutil, sys; from difflab.training.checkpoint import find_checkpoint; \
f = find_checkpoint(sys.argv[1]); shutil.copy(f, sys.argv[2]); print('snapshot of', f)" $1 $2
}
PLAIN=ddim:5,ddim:20,ddim:50,dpmpp-2m:5,dpmpp-2m:20
case $PART in
  train)
    rm -rf .runs/*; mkdir -p $R
    common="--max-minutes $MINUTES --steps 100000000 --log-every 200 --no-progress ${EXTRA:-}"
    logger=$(python3 -c "import tensorboard" 2>/dev/null && echo tensorboard || echo none)
    echo "default arm: --logger $logger"
    difflab train $ANIME --out .runs/default $common --eval-every ${EVAL_EVERY:-2000} --holdout 500 $MONITOR \
      --logger $logger > .runs/default.log &
    difflab train $ANIME --recipe keras-lab --out .runs/keras $common --eval-every ${KERAS_EVAL_EVERY:-3000} \
      --holdout 500 $MONITOR > .runs/keras.log &
    [ "${GAN:-1}" = 1 ] && { difflab train $ANIME --model stylegan2 --out .runs/gan $common > .runs/gan.log & }
    wait
    for run in default keras gan; do echo "== $run"; tail -5 .runs/$run.log; keep .runs/$run; cp .runs/$run.log $R/; done
    ls .runs/default/logs/* | head -3 ;;
  sample)  # the old layout's call 2
    mkdir -p $R; for run in default keras; do score_best .runs/$run; done; pack
    gan_prior_ablation 0 10 .runs/default gan-prior-steps10 --plain $PLAIN
    side_runs ${MEM_MINUTES:-5} ${MNIST_MINUTES:-1} ${DIP_MINUTES:-1}
    mnist_ablation ${MNIST_ABLATION_S:-330} ;;
  long1)  # issue 16's 20-minute default arm and issue 15's GAN, detached
    rm -rf .runs/*; mkdir -p $R
    long="--steps 100000000 --log-every 200 --no-progress ${EXTRA:-}"
    logger=$(python3 -c "import tensorboard" 2>/dev/null && echo tensorboard || echo none)
    echo "default arm: --logger $logger"
    detach default train $ANIME --out .runs/default --max-minutes ${LONG:-20} $long --eval-every ${EVAL_EVERY:-3000} \
      --holdout 500 $MONITOR --logger $logger
    detach gan train $ANIME --model stylegan2 --out .runs/gan --max-minutes ${GAN_MINUTES:-10} $long
    watch_runs ${CALL_S:-560} default gan ;;
  long2)  # the memorisation run, detached; the fallback GAN-prior rows on a snapshot
    mkdir -p $R
    detach anime2k train .gpu2/anime-faces-96px-2k.zip --image-size 64 --out .runs/anime2k --max-minutes ${MEM_MINUTES:-10.5} \
      --steps 100000000 --log-every 200 --no-progress ${EXTRA:-} --eval-every ${MEM_EVAL_EVERY:-1500} --holdout 200 $MONITOR
    finish gan
    snapshot .runs/default .runs/default-snapshot.safetensors
    gan_prior_ablation $(( ${CALL_S:-560} - SECONDS - 20 )) 10 .runs/default-snapshot.safetensors gan-prior-snapshot-steps10 --plain $PLAIN
    watch_runs ${CALL_S:-560} default anime2k ;;
  long3)  # both long runs finished, then the GAN-prior rows alone on the GPU
    mkdir -p $R; packer
    finish default; finish anime2k
    gan_prior_ablation $(( ${FINAL_S:-560} - SECONDS - 60 )) 10 .runs/default gan-prior-steps10 --plain $PLAIN
    gan_prior_ablation $(( ${FINAL_S:-560} - SECONDS - 15 )) 5 .runs/default gan-prior-steps5 --no-baselines ;;
  mem1)  # issue 16's 2,000-image run alone on the GPU, detached (MEM_MINUTES, default 20), carry .gpu3
    rm -rf .runs/*; mkdir -p $R
    detach anime2k train .gpu2/anime-faces-96px-2k.zip --image-size 64 --out .runs/anime2k --max-minutes ${MEM_MINUTES:-20} \
      --steps 100000000 --log-every 200 --no-progress ${EXTRA:-} --eval-every ${MEM_EVAL_EVERY:-3000} --holdout 200 $MONITOR
    watch_runs ${CALL_S:-560} anime2k ;;
  mem2)  # its second call (carry .gpu3): watches it to the end
    mkdir -p $R; packer; finish anime2k ;;
  mnist-all)  # one call, carry .gpu2 only: the MNIST model and the denoiser side by side, then the MNIST ablation alone
    mkdir -p $R; packer
    side_runs 0 ${MNIST_MINUTES:-1.5} ${DIP_MINUTES:-1.5}
    mnist_ablation $(( ${FINAL_S:-570} - SECONDS - 15 )) ;;
  mnist)  # the old layout's call 3
    mkdir -p $R
    mnist_ablation ${MNIST_ABLATION_S:-330}
    gan_prior_ablation 0 5 .runs/default gan-prior-steps5 --no-baselines ;;
esac
pack
ls -la $OUT
