#!/usr/bin/env bash
# Issue 17, "profile where the time goes, with kernel time against wall time": the run's own training
# step (benchmarks/profile_train_step.py) for the default run (batch 64, compiled with CUDA graphs, then
# without graphs in case the profiler cannot see inside the replays), the matched 36.7M network at batch
# 256, and StyleGAN2 eager and compiled (issue 17, item 4). No carry; about 6-7 minutes, cold compiles.
#   EACH_S (default 150): the limit of one profile; PROFILES: which of default,nographs,matched,gan,gan-compiled
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
profile() {  # NAME ARGS...
  local name=$1; shift
  case ",${PROFILES:-default,nographs,matched,gan,gan-compiled}," in *",$name,"*) ;; *) return 0 ;; esac
  echo "== $name"
  timeout ${EACH_S:-150} python3 benchmarks/profile_train_step.py "$@" --out $OUT/$name 2>&1 | grep -v -E "Warn|USDT"
}
profile default
profile nographs --options '{"cuda_graphs": "off"}'
profile matched --preset ddpm-peer-64 --options '{"batch_size": 256}'
profile gan --options '{"model": "stylegan2"}'
profile gan-compiled --options '{"model": "stylegan2", "compile": "on"}'
