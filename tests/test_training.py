"""Training: exact resume, atomic checkpoints, divergence handling, configuration sources."""
import json
import os
import re

import pytest
import torch

from difflab.cli.main import main
from difflab.config import TrainConfig
from difflab.errors import ConfigError
from difflab.training import NonFiniteLossError, train
from difflab.training.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint

TINY = dict(data="shapes", image_size=16, channels=16, dim_mults="1,2", res_blocks=1, attn_resolutions="8",
            timesteps=100, batch_size=8, lr=1e-3, warmup_steps=2, save_every=3, log_every=1, grid_images=4,
            grid_sampler_steps=2, keep_checkpoints=10, workers=0, ema_warmup_steps=0, ema_decay=0.9,
            rotate_degrees=5.0, jitter=0.1, dropout=0.1)


def tiny_config(out, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "out": str(out), **overrides}).validate()


def weights(run_dir, group):
    return load_checkpoint(run_dir / "checkpoints", groups=(group,)).tensors[group]


def test_resume_gives_the_same_weights_as_training_straight(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_config(straight, steps=6), progress=False)
    train(tiny_config(resumed, steps=3), progress=False)
    train(tiny_config(resumed, steps=6), resume=True, progress=False)
    for group in ("model", "ema"):
        a, b = weights(straight, group), weights(resumed, group)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f"{group}.{name} differs after resume"
    optimizer_a = load_checkpoint(straight / "checkpoints").tensors["optimizer"]
    optimizer_b = load_checkpoint(resumed / "checkpoints").tensors["optimizer"]
    assert all(torch.equal(optimizer_a[k], optimizer_b[k]) for k in optimizer_a)
    # The metrics log of the resumed run continues without duplicated steps.
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6
    # And training did something: the weights moved away from the step-3 checkpoint.
    step3 = load_checkpoint(resumed / "checkpoints" / "ckpt-00000003.safetensors").tensors["model"]
    assert any(not torch.equal(step3[k], weights(resumed, "model")[k]) for k in step3)


def test_run_folder_contents(tmp_path):
    train(tiny_config(tmp_path / "run", steps=3, keep_checkpoints=1), progress=False)
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["ckpt-00000003.safetensors"]
    assert (run / "samples" / "step-00000003.png").is_file()
    assert (run / "loss.png").is_file() and (run / "config.json").is_file()
    assert json.loads((run / "config.json").read_text())["channels"] == 16
    checkpoint = load_checkpoint(run)
    assert checkpoint.step == 3 and checkpoint.config["timesteps"] == 100
    assert {"model", "ema", "optimizer", "rng"} <= set(checkpoint.tensors)


def test_interrupted_checkpoint_write_keeps_the_previous_latest(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(run, steps=3), progress=False)
    good = find_checkpoint(run / "checkpoints")

    import difflab.training.checkpoint as checkpoint_module

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial garbage")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint_module, "save_file", crash_midway)
    with pytest.raises(OSError, match="simulated"):
        train(tiny_config(run, steps=6), resume=True, progress=False)
    assert find_checkpoint(run / "checkpoints") == good
    assert load_checkpoint(run / "checkpoints").step == 3
    assert not [p for p in os.listdir(run / "checkpoints") if p.endswith(".tmp")]


def test_nan_loss_stops_with_a_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config(run, steps=3), progress=False)
    import difflab.families.diffusion as loop  # the diffusion family builds the network
    build_network = loop.build_network

    def network_that_outputs_nan(config, channels, *more):
        network = build_network(config, channels, *more)
        network.register_forward_hook(lambda module, inputs, output: output * float("nan"))
        return network

    monkeypatch.setattr(loop, "build_network", network_that_outputs_nan)
    with pytest.raises(NonFiniteLossError, match="NaN or infinite.*ckpt-00000003"):
        train(tiny_config(run, steps=6), resume=True, progress=False)
    assert load_checkpoint(run / "checkpoints").step == 3


def test_config_file_and_command_line_precedence(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text('channels = 16\ndim-mults = "1,2"\nimage_size = 16\nsteps = 2\nbeta_schedule = "linear"\n')
    from difflab.cli.main import build_parser
    from difflab.cli.train import resolve_config
    args = build_parser().parse_args(["train", "shapes", "--config", str(config_file), "--out", str(tmp_path / "r"),
                                      "--steps", "5"])
    config = resolve_config(args)
    assert (config.channels, config.dim_mults, config.steps, config.beta_schedule) == (16, "1,2", 5, "linear")
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  channels: 24\n  attn_resolutions: [8, 4]\n")
    args = build_parser().parse_args(["train", "shapes", "--config", str(yaml_file), "--out", str(tmp_path / "r")])
    assert resolve_config(args).attn_resolutions == "8,4"
    bad = tmp_path / "bad.toml"
    bad.write_text("chanels = 3\n")
    args = build_parser().parse_args(["train", "shapes", "--config", str(bad), "--out", str(tmp_path / "r")])
    with pytest.raises(ConfigError, match="unknown option 'chanels'"):
        resolve_config(args)


@pytest.mark.parametrize("argv,message", [
    (["--beta-schedule", "quadratic"], "--beta-schedule must be one of linear, cosine, sigmoid"),
    (["--dim-mults", "1,two"], "--dim-mults must be comma-separated"),
    (["--image-size", "30", "--dim-mults", "1,2,4"], "--image-size 30 is not divisible by 4"),
    (["--objective", "eps"], "--objective must be one of pred_noise, pred_x0, pred_v"),
    (["--mixed-precision", "fp8"], "--mixed-precision must be one of"),
    (["--lr", "0"], "--lr must be in"),
    (["--batch-size", "10", "--grad-accum", "3"], "--batch-size \\(10\\) must be divisible by --grad-accum"),
])
def test_bad_options_fail_before_any_work_naming_the_option(tmp_path, capsys, argv, message):
    out = tmp_path / "never-created"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "shapes", "--out", str(out), *argv])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_train_refuses_to_clobber_a_run_without_a_flag(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "shapes", "--out", str(run), "--image-size", "16", "--channels", "16", "--dim-mults", "1,2",
            "--attn-resolutions", "8", "--batch-size", "8", "--steps", "2", "--save-every", "2", "--timesteps", "50",
            "--grid-images", "4", "--grid-sampler-steps", "2", "--no-progress", "--workers", "0"]
    assert main(args) == 0
    with pytest.raises(SystemExit):
        main(args)
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main([*args[:-1], "0", "--resume", "--steps", "4"]) == 0
    assert load_checkpoint(run).step == 4
    with pytest.raises(SystemExit):  # a network option may not change on resume
        main([*args, "--resume", "--channels", "32"])


def test_learning_rate_schedule_closed_forms():
    from difflab.training.lr_schedule import learning_rate
    config = tiny_config("unused", steps=100, warmup_steps=10, lr=1e-3)
    assert learning_rate(config, 0) == pytest.approx(1e-4)  # warm-up: (step + 1) / warmup_steps
    assert learning_rate(config, 50) == pytest.approx(1e-3)  # constant without --lr-decay
    cosine = tiny_config("unused", steps=100, warmup_steps=10, lr=1e-3, lr_decay="cosine")
    assert learning_rate(cosine, 50) == pytest.approx(0.5e-3)  # cos(pi / 2): half way
    assert learning_rate(cosine, 100) == pytest.approx(0.0, abs=1e-12)
    linear = tiny_config("unused", steps=100, warmup_steps=10, lr=1e-3, lr_decay="linear")
    assert learning_rate(linear, 75) == pytest.approx(0.25e-3)
    # A time budget that ends first sets the pace: 30 of 60 seconds spent at step 10 of 1,000,000.
    timed = tiny_config("unused", steps=1_000_000, max_minutes=1.0, warmup_steps=10, lr=1e-3, lr_decay="linear")
    assert learning_rate(timed, 10, run_seconds=30.0) == pytest.approx(0.5e-3)
    assert learning_rate(timed, 10, run_seconds=90.0) == 0.0


def test_resume_after_a_crash_keeps_the_decaying_learning_rate_exact(tmp_path, monkeypatch):
    """With --lr-decay over a step budget, a run killed after a checkpoint and resumed with the
    same options ends with the weights (and the logged learning rates) of an uninterrupted run."""
    import difflab.training.loop as loop
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    train(tiny_config(straight, steps=6, lr_decay="cosine"), progress=False)
    real_save = loop.save_checkpoint

    def save_then_crash(folder, checkpoint, keep):
        path = real_save(folder, checkpoint, keep=keep)
        if checkpoint.step == 3:
            raise KeyboardInterrupt  # the process dies right after writing step 3
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(crashed, steps=6, lr_decay="cosine"), progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    train(tiny_config(crashed, steps=6, lr_decay="cosine"), resume=True, progress=False)
    a, b = weights(straight, "model"), weights(crashed, "model")
    assert all(torch.equal(a[name], b[name]) for name in a)

    def logged_lrs(run):
        return [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged_lrs(straight) == logged_lrs(crashed)
    assert logged_lrs(straight)[-1] < logged_lrs(straight)[2] < TINY["lr"]  # it did decay


def test_the_compiled_example_is_in_the_batches_layout(tmp_path, monkeypatch):
    """A compiled graph is specialised on its example's strides: with --channels-last on a GPU the
    loop hands the trainer a channels-last example, as its batches are (an NCHW example compiled a
    second graph at the first step). The GPU's choice of layout is forced here on the CPU."""
    import difflab.training.loop as loop
    from difflab.families.diffusion import DiffusionTrainer

    seen = {}
    original = DiffusionTrainer.prepare

    def spy(self, prepare, example_images, *args, **kwargs):
        seen["example"] = example_images.is_contiguous(memory_format=torch.channels_last)
        return original(self, prepare, example_images, *args, **kwargs)

    monkeypatch.setattr(loop, "memory_format_for", lambda config, device: torch.channels_last)
    monkeypatch.setattr(DiffusionTrainer, "prepare", spy)
    train(tiny_config(tmp_path / "run", steps=1), progress=False)
    assert seen == {"example": True}
