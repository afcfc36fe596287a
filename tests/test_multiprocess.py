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


GAN_ARGS = ["shapes", "--model", "stylegan2", "--image-size", "16", "--batch-size", "8", "--z-dim", "16", "--w-dim", "16",
            "--channel-base", "256", "--channel-max", "32", "--mbstd-group", "4", "--r1-interval", "4",
            "--save-every", "12", "--log-every", "4", "--grid-images", "4", "--workers", "0", "--no-progress",
            "--mixed-precision", "no", "--compile", "off"]


def test_a_gan_trains_on_two_processes_with_the_monitor_and_resumes(tmp_path):
    """The StyleGAN2 family on the shared multi-process core: its two optimisers, lazy R1 and ADA under
    DDP, the monitor on the main process with every process following its verdict (--keep-best)."""
    if shutil.which("accelerate") is None:
        pytest.skip("the accelerate command is not on PATH")
    features = tmp_path / "stub_features.py"
    features.write_text("import torch\nclass M:\n    def features(self, x):\n        return x.mean(dim=(2, 3))\n"
                        "def net(device='cpu'):\n    return M()\n")
    run = tmp_path / "gan"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    base = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29518",
            "-m", "difflab.cli.main", "train", *GAN_ARGS, "--out", str(run), "--eval-every", "6",
            "--eval-images", "8", "--eval-features", f"{features}:net", "--keep-best"]
    for extra in (["--steps", "12"], ["--steps", "24", "--resume"]):
        result = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["model"] == "stylegan2" and summary["step"] == 24
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [6, 12, 18, 24]
    assert all(key in records[0] for key in ("loss_g", "loss_d", "r1", "aug_p"))
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.safetensors")) == \
        ["ckpt-00000012.safetensors", "ckpt-00000024.safetensors"]
    assert summary["monitor"]["best_step"] in (6, 12, 18, 24)
