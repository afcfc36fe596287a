"""Multi-process training through `accelerate launch` on the CPU (gloo): the same command
that runs on several GPUs (`--multi_gpu` starts torchrun; without CUDA the trainer asks
accelerate for its MULTI_CPU mode). Each process trains on its own shard of every global batch."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from difflab.data import batch_indices
from difflab.training.checkpoint import load_checkpoint

ARGS = ["shapes", "--image-size", "16", "--channels", "16", "--dim-mults", "1,2", "--res-blocks", "1",
        "--attn-resolutions", "8", "--timesteps", "100", "--batch-size", "16", "--lr", "2e-3", "--warmup-steps", "5",
        "--save-every", "40", "--log-every", "10", "--grid-images", "4", "--grid-sampler-steps", "2",
        "--workers", "0", "--no-progress", "--mixed-precision", "no"]


def launch(run, *extra):
    if shutil.which("accelerate") is None:
        pytest.skip("the accelerate command is not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               "-m", "difflab.cli.main", "train", *ARGS, "--out", str(run), *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_processes_train_resume_and_write_one_checkpoint(tmp_path):
    run = tmp_path / "run"
    launch(run, "--steps", "40")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["images_per_process_per_step"] == 8
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.safetensors"))
    assert checkpoints == ["ckpt-00000040.safetensors"]  # written once, by the main process
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True) and losses[-1] < 0.7 * losses[0], losses
    launch(run, "--steps", "60", "--resume")
    checkpoint = load_checkpoint(run)
    assert checkpoint.step == 60 and checkpoint.meta["processes"] == 2
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40, 50, 60]


def test_processes_get_disjoint_shards_of_each_global_batch():
    for step in (0, 7, 123):
        shards = [batch_indices(step, 16, 100, seed=0, rank=rank, world_size=2) for rank in (0, 1)]
        assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
        assert sorted(torch.cat(shards).tolist()) == sorted(batch_indices(step, 16, 100, seed=0).tolist())
