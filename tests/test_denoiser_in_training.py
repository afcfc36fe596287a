"""Issue 15, the report's failed variant in its reading (a): a diffusion run whose network sees a frozen
one-step denoiser's output, net(clamp(D(x_t), -1, 1), t) (`--input-denoiser`, families/input_denoiser.py),
on tiny CPU models and real MNIST digits from ../shared/data/mnist:

- the wrapper computes exactly net(clamp(D(x), -1, 1), t);
- training never changes D (bit for bit, in the weights and the EMA) and gives it no gradient;
- the checkpoints hold D, so `sample` works without the denoiser run, and the loaded network is the
  one rebuilt by hand from the two runs' weights;
- bad values fail before any work, naming the option.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.build import build_network
from difflab.cli.main import main
from difflab.config import TrainConfig
from difflab.errors import ConfigError
from difflab.families import load_generator, make_config
from difflab.families.denoiser import build_denoiser_network
from difflab.families.diffusion import DiffusionTrainer
from difflab.families.input_denoiser import DenoisedInput
from difflab.generation import LoadedModel, generate_images, load_model
from difflab.training import train
from difflab.training.checkpoint import list_checkpoints, load_checkpoint

TINY = {"image_size": 28, "image_channels": "1", "channels": 8, "dim_mults": "1,2", "res_blocks": 1,
        "attn_resolutions": ""}
RUN = {"data": "mnist", "max_images": 64, "hflip": False, "workers": 0, "batch_size": 8, "log_every": 1,
       "grid_images": 4}
DIFFUSION = {**TINY, "timesteps": 50, "grid_sampler_steps": 2, "keep_checkpoints": 10}


def config_for(root: Path, out: Path, **options):
    return make_config({**RUN, "data_root": str(root), "out": str(out), **options}).validate()


@pytest.fixture(scope="module")
def mnist_root(shared_data) -> Path:
    return shared_data / "mnist"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_root) -> dict[str, Path]:
    """A 4-step denoiser run and a 4-step diffusion run that sees it (checkpoints at steps 2 and 4)."""
    folder = tmp_path_factory.mktemp("inside")
    dip, variant = folder / "dip", folder / "variant"
    train(config_for(mnist_root, dip, model="denoiser", steps=4, save_every=4, **TINY), progress=False)
    train(config_for(mnist_root, variant, steps=4, save_every=2, input_denoiser=str(dip), **DIFFUSION),
          progress=False)
    return {"dip": dip, "variant": variant, "folder": folder}


def tiny_networks(seed: int = 0):
    torch.manual_seed(seed)
    net = build_network(TrainConfig.from_dict(DIFFUSION), 1)
    denoiser = build_denoiser_network(make_config({"model": "denoiser", **TINY}), 1)
    return net, denoiser


def test_the_wrapper_is_the_network_on_the_clamped_denoiser_estimate():
    net, denoiser = tiny_networks()
    with torch.no_grad():  # the output layers start at zero; random ones, so that D's output leaves [-1, 1]
        for network in (net, denoiser):
            [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight.normal_(0, 1)
    wrapped = DenoisedInput(net, denoiser)
    x, t = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 17, 49])
    with torch.no_grad():
        estimate = denoiser(x, torch.zeros(3))
        assert estimate.min() < -1 and estimate.max() > 1
        got = wrapped(x, t)
        assert torch.equal(got, net(estimate.clamp(-1, 1), t))
        assert not torch.allclose(got, net(estimate, t)) and not torch.allclose(got, net(x, t))
    wrapped.train()
    assert wrapped.training and wrapped.net.training and not wrapped.denoiser.training
    assert not any(p.requires_grad for p in wrapped.denoiser.parameters())
    assert all(p.requires_grad for p in wrapped.net.parameters())
    assert wrapped.compile_regions() == list(net.compile_regions())  # --compile-scope blocks: the U-Net's, not D's
    assert not {id(m) for m in wrapped.compile_regions()} & {id(m) for m in denoiser.modules()}


def test_training_leaves_the_denoiser_bit_identical(runs):
    dip = load_checkpoint(runs["dip"], groups=("ema",)).tensors["ema"]
    first, last = (load_checkpoint(path) for path in list_checkpoints(runs["variant"] / "checkpoints"))
    assert (first.step, last.step) == (2, 4)
    for group in ("model", "ema"):
        held = {name[len("denoiser."):]: v for name, v in last.tensors[group].items() if name.startswith("denoiser.")}
        assert held.keys() == dip.keys()
        for name, tensor in dip.items():
            assert torch.equal(held[name], tensor), f"{group}.denoiser.{name} changed in training"
    trained = [name for name in last.tensors["model"] if name.startswith("net.")]
    assert trained and any(not torch.equal(first.tensors["model"][n], last.tensors["model"][n]) for n in trained)
    # The optimiser holds only the U-Net's parameters: one exp_avg per trained tensor, none for D.
    assert sum(key.endswith(".exp_avg") for key in last.tensors["optimizer"]) == len(trained)
    assert last.meta["input_denoiser"]["source"] == str(runs["dip"])
    assert last.meta["input_denoiser"]["config"]["model"] == "denoiser"


def test_the_denoiser_gets_no_gradient(runs, mnist_root, tmp_path):
    config = config_for(mnist_root, tmp_path / "x", input_denoiser=str(runs["dip"]), **DIFFUSION)
    trainer = DiffusionTrainer(config, 1, torch.device("cpu"))
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.model.net.parameters()}
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    trainer.loss_fn(trainer.model, images, torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is None for p in trainer.model.denoiser.parameters())
    assert all(p.grad is not None for p in trainer.model.net.parameters())


def test_the_run_samples_without_the_denoiser_run(runs, tmp_path):
    dip_copy, variant = tmp_path / "dip", tmp_path / "variant"
    shutil.copytree(runs["dip"], dip_copy)
    shutil.copytree(runs["variant"], variant)
    # The network rebuilt by hand, in memory: the denoiser run's EMA weights under the checkpoint's U-Net.
    denoiser = load_generator(dip_copy, device="cpu").network
    shutil.rmtree(dip_copy)
    checkpoint = load_checkpoint(variant, groups=("ema",))
    net = build_network(TrainConfig.from_dict(DIFFUSION), 1)
    net.load_state_dict({n[len("net."):]: v for n, v in checkpoint.tensors["ema"].items() if n.startswith("net.")})
    by_hand = DenoisedInput(net, denoiser).eval()

    loaded = load_model(variant, device="cpu")
    assert isinstance(loaded.network, DenoisedInput) and loaded.config.input_denoiser
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 40])
    with torch.no_grad():
        assert torch.equal(loaded.network(x, t), by_hand(x, t))
    in_memory = LoadedModel(by_hand, loaded.schedule, loaded.config, 1, loaded.step, loaded.checkpoint)
    expected = torch.cat([images for _, images in generate_images(in_memory, 4, 2, "ddim", 3, 0.0, 5)])

    out = tmp_path / "samples"
    assert main(["sample", str(variant), "-n", "4", "--batch-size", "2", "--sampler", "ddim", "--steps", "3",
                 "--seed", "5", "--format", "png", "--out", str(out), "--no-progress", "--device", "cpu",
                 "--mixed-precision", "no"]) == 0
    manifest = json.loads((out / "difflab-sample.json").read_text())
    files = [out / name for name in manifest["images"]]
    written = torch.stack([torch.from_numpy(np.array(Image.open(f)))[None] for f in files])
    assert torch.equal(written, expected)


@pytest.fixture(scope="module")
def other_runs(runs, mnist_root) -> dict[str, Path]:
    """A 16-px denoiser run (1 step), a diffusion run (1 step) and a folder that holds no run."""
    folder = runs["folder"]
    train(config_for(mnist_root, folder / "dip16", model="denoiser", steps=1, save_every=1,
                     **{**TINY, "image_size": 16}), progress=False)
    train(config_for(mnist_root, folder / "diffusion", steps=1, save_every=1, **DIFFUSION), progress=False)
    (folder / "empty").mkdir()
    return {"DIP": runs["dip"], "DIP16": folder / "dip16", "DIFFUSION": folder / "diffusion",
            "EMPTY": folder / "empty", "NOWHERE": folder / "nowhere"}


@pytest.mark.parametrize("source,extra,message", [
    ("NOWHERE", [], r"--input-denoiser: no such run folder or checkpoint"),
    ("EMPTY", [], r"--input-denoiser: no checkpoint found"),
    ("DIFFUSION", [], r"--input-denoiser must be a --model denoiser run; .* is a diffusion run"),
    ("DIP16", [], r"--input-denoiser: .* denoises images of 16x16 px, 1 channel; this run's are 28x28 px, 1 channel"),
    ("DIP", ["--image-channels", "3"], r"--input-denoiser: .* denoises images of 28x28 px, 1 channel; this run's "
                                       r"are 28x28 px, 3 channels"),
])
def test_bad_input_denoisers_fail_before_any_work(other_runs, mnist_root, tmp_path, capsys, source, extra, message):
    out = tmp_path / "out"
    args = ["train", "mnist", "--data-root", str(mnist_root), "--image-size", "28", "--image-channels", "1",
            "--channels", "8", "--dim-mults", "1,2", "--attn-resolutions", "", "--steps", "1", "--no-progress",
            "--out", str(out), "--input-denoiser", str(other_runs[source]), *extra]
    with pytest.raises(SystemExit) as error:
        main(args)
    assert error.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # nothing was written


def test_channels_detected_from_the_data_are_checked_too(runs, tmp_path):
    """--image-channels auto: the check runs again once the data says 3 channels (procedural shapes)."""
    config = make_config({"data": "shapes", "max_images": 16, "workers": 0, "batch_size": 8, "steps": 1,
                          "out": str(tmp_path / "out"), "input_denoiser": str(runs["dip"]),
                          **{**DIFFUSION, "image_channels": "auto"}}).validate()
    with pytest.raises(ConfigError, match="denoises images of 28x28 px, 1 channel; this run's are 28x28 px, 3 "
                                          "channels"):
        train(config, progress=False)
    assert not list_checkpoints(tmp_path / "out" / "checkpoints")


def test_export_refuses_such_a_run_naming_the_option(runs, tmp_path):
    from difflab.export.diffusers import load_for_export
    with pytest.raises(ConfigError, match="trained with input_denoiser, so its U-Net reads") as caught:
        load_for_export(runs["variant"], "ema")
    assert caught.value.option == "input_denoiser" and not (tmp_path / "out").exists()
