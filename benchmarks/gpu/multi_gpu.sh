#!/usr/bin/env bash
# Issue 6: the 64x64 anime-face configuration trained through `accelerate launch` on 1 and on 2 GPUs
# of one host with the same global batch (BATCH, default 256; difflab's --batch-size is global and each
# process trains on its own shard), STEPS steps each (default 600). Both sides eager (--compile off
# --cuda-graphs off), so compile time stays out of the comparison. Then images/s per GPU, the
# scaling efficiency and the two loss curves (benchmarks/multi_gpu_table.py). Carry .data.
# NVLink multicast stays off (the device image sets these too; set again for the launched processes).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name --format=csv,noheader
for n in ${GPUS:-1 2}; do
  flags="--num_processes $n --num_machines 1"
  [ "$n" -gt 1 ] && flags="--multi_gpu $flags"
  rm -rf .runs/multi-gpu-$n
  accelerate launch $flags -m difflab.cli.main train .data/anime-faces-64px-20k.zip --out .runs/multi-gpu-$n \
    --steps ${STEPS:-600} --batch-size ${BATCH:-256} --compile off --cuda-graphs off --save-every 100000 \
    --log-every 50 --no-progress 2>&1 | grep -v Warn | tail -4
  cp .runs/multi-gpu-$n/metrics.jsonl $OUT/multi-gpu-$n.jsonl
done
python3 benchmarks/multi_gpu_table.py $OUT/multi-gpu-*.jsonl | tee $OUT/multi-gpu-table.md
