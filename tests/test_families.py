"""Model families on the shared run core (issue 14, part 1), through the real training loop and the
CLI, on real images: exact resume for a GAN, the `family` field and the loader that dispatches on
it, old run folders, options kept to their family, one `compare` table for two families, and the
precision choice on CPUs with and without bf16 matrix instructions (issue 13)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from difflab.cli.main import main
from difflab.config import TrainConfig
from difflab.errors import ConfigError, DataError
from difflab.families import FAMILIES, config_class, get_family, load_generator, make_config
from difflab.training import train
from difflab.training.checkpoint import load_checkpoint

GAN = dict(model="stylegan2", image_size=16, batch_size=8, channel_base=256, channel_max=32, z_dim=16, w_dim=16,
           max_images=64, workers=0, log_every=1, save_every=3, grid_images=4, r1_interval=2, ada_interval=2,
           keep_checkpoints=10)
DIFFUSION = dict(image_size=16, channels=16, dim_mults="1,2", attn_resolutions="8", timesteps=50, batch_size=8,
                 max_images=64, workers=0, save_every=3, log_every=1, grid_images=4, grid_sampler_steps=2)


@pytest.fixture(scope="module")
def faces(shared_data) -> Path:
    return shared_data / "anime-faces-96px-2k.zip"


def gan_config(data, out, **overrides):
    return make_config({**GAN, "data": str(data), "out": str(out), **overrides}).validate()


def test_every_registered_family_builds_its_config_and_plugs_in():
    for name in FAMILIES:
        family = get_family(name)
        assert family.name == name and callable(family.trainer) and callable(family.load_generator)
        config = config_class(name)(data="x", out="y")
        assert config.model == name or name == "diffusion"
    assert config_class("diffusion") is TrainConfig


def test_an_option_of_another_family_is_refused_naming_it():
    with pytest.raises(ConfigError, match="r1_gamma is an option of model stylegan2, not of model diffusion"):
        make_config({"data": "x", "out": "y", "r1_gamma": 1.0})
    with pytest.raises(ConfigError, match="timesteps is an option of model diffusion, not of model stylegan2"):
        make_config({"model": "stylegan2", "data": "x", "out": "y", "timesteps": 10})
    with pytest.raises(ConfigError, match="model must be one of"):
        make_config({"model": "vae", "data": "x", "out": "y"})
    with pytest.raises(ConfigError, match="image_size must be a power of two"):
        get_family("stylegan2").check(make_config({"model": "stylegan2", "data": "x", "out": "y", "image_size": 48}))


def test_gan_resume_through_the_loop_is_exact(faces, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(gan_config(faces, straight, steps=6), progress=False)
    train(gan_config(faces, resumed, steps=3), progress=False)
    train(gan_config(faces, resumed, steps=6), resume=True, progress=False)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a.meta["family"] == "stylegan2" and a.step == 6
    for group in ("G", "D", "G_ema", "opt_g", "opt_d", "augment"):
        assert a.tensors[group].keys() == b.tensors[group].keys(), group
        for name in a.tensors[group]:
            assert torch.equal(a.tensors[group][name], b.tensors[group][name]), f"{group}.{name} differs after resume"
    assert a.meta["cur_nimg"] == b.meta["cur_nimg"] == 6 * 8
    records = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert {"loss_g", "loss_d", "r1", "aug_p", "real_sign"} <= set(records[-1])
    assert (resumed / "loss.png").is_file() and (resumed / "samples" / "step-00000006.png").is_file()


def test_the_loader_dispatches_on_the_family_field(faces, tmp_path):
    train(gan_config(faces, tmp_path / "gan", steps=3), progress=False)
    train(TrainConfig.from_dict({**DIFFUSION, "data": str(faces), "out": str(tmp_path / "ddpm"), "steps": 3})
          .validate(), progress=False)
    gan, ddpm = load_generator(tmp_path / "gan", "cpu"), load_generator(tmp_path / "ddpm", "cpu")
    assert (gan.family, ddpm.family) == ("stylegan2", "diffusion")
    for generator in (gan, ddpm):
        first, images = next(generator.generate(4, batch_size=4, seed=0))
        assert first == 0 and images.shape == (4, 3, 16, 16) and images.dtype == torch.uint8
    with pytest.raises(ConfigError, match="truncation applies to GAN runs"):
        ddpm.describe(truncation=0.5) and next(ddpm.generate(2, truncation=0.5))
    with pytest.raises(ConfigError, match="steps applies to diffusion runs"):
        next(gan.generate(2, steps=10))
    from difflab.generation import load_model
    with pytest.raises(DataError, match="is a stylegan2 run"):
        load_model(tmp_path / "gan")


def test_an_old_run_folder_without_a_family_field_loads_as_diffusion(faces, tmp_path):
    """Checkpoints written before model families had no `family` meta and no `model` option."""
    run = tmp_path / "old"
    train(TrainConfig.from_dict({**DIFFUSION, "data": str(faces), "out": str(run), "steps": 3}).validate(),
          progress=False)
    path = run / "checkpoints" / "ckpt-00000003.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
    config, meta = json.loads(metadata["config"]), json.loads(metadata["meta"])
    del config["model"], meta["family"]
    save_file(tensors, str(path), metadata={**metadata, "config": json.dumps(config), "meta": json.dumps(meta)})
    loaded = load_generator(run, "cpu")
    assert loaded.family == "diffusion" and loaded.step == 3


def test_cli_end_to_end_for_a_gan_on_real_faces(faces, tmp_path, capsys):
    run, out = tmp_path / "gan", tmp_path / "samples"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in GAN.items()]
    assert main(["train", str(faces), "--out", str(run), "--steps", "4", "--no-progress", *flags]) == 0
    assert main(["sample", str(run), "-n", "6", "--out", str(out), "--batch-size", "4", "--no-progress"]) == 0
    manifest = json.loads((out / "difflab-sample.json").read_text())
    assert manifest["family"] == "stylegan2" and manifest["truncation"] == 1.0 and manifest["sampler"] == "StyleGAN2, psi 1"
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(f"{i}.jpg" for i in range(1, 7))
    assert main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "t"), "--truncation", "0.75",
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "t" / "difflab-sample.json").read_text())["truncation"] == 0.75
    assert main(["fuse", str(run), "--seeds", "1,2", "--lams", "0,0.5,1", "--out", str(tmp_path / "strip.png")]) == 0
    assert (tmp_path / "strip.png").is_file()
    capsys.readouterr()
    assert main(["fuse", str(run), str(out / "1.jpg"), str(out / "2.jpg"), "--out", str(tmp_path / "f.png")]) == 1
    assert "A GAN has no encoder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(run), "-n", "2", "--out", str(tmp_path / "u"), "--sampler", "ddim"])
    assert exit_info.value.code == 2 and "--sampler applies to diffusion runs" in capsys.readouterr().err


def test_compare_puts_two_families_in_one_table(faces, tmp_path):
    gan, ddpm = tmp_path / "gan", tmp_path / "ddpm"
    train(gan_config(faces, gan, steps=2), progress=False)
    train(TrainConfig.from_dict({**DIFFUSION, "data": str(faces), "out": str(ddpm), "steps": 2}).validate(),
          progress=False)
    study = tmp_path / "study"
    assert main(["compare", str(ddpm), str(gan), "--samplers", "ddim:3", "--truncations", "1,0.75", "-n", "8",
                 "--batch-size", "8", "--out", str(study), "--no-progress"]) == 0
    document = json.loads((study / "results.json").read_text())
    assert [(row["model"], row["label"]) for row in document["rows"]] == [
        ("diffusion", "ddim:3"), ("stylegan2", "StyleGAN2-psi1"), ("stylegan2", "StyleGAN2-psi0.75")]
    assert all(len(list(Path(row["folder"]).glob("*.png"))) == 8 for row in document["rows"])
    table = (study / "results.md").read_text()
    assert "| ddpm | diffusion | DDIM |" in table and "| gan | stylegan2 | StyleGAN2-psi0.75 |" in table


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, True, "bf16"), (False, True, "bf16"),
                                                        (False, False, "no")])
def test_auto_precision_follows_the_cpus_bf16_instructions(monkeypatch, amx, avx512_bf16, expected):
    from difflab.training import speed
    monkeypatch.delenv("DIFFLAB_CPU_BF16", raising=False)  # the stand-in for a CPU without bf16 would mask the probes
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert speed.resolve_mixed_precision("auto", torch.device("cpu")) == expected
    assert speed.resolve_mixed_precision("no", torch.device("cpu")) == "no"
    choice, why = speed.describe_precision_choice("auto", torch.device("cpu"))
    assert choice == expected and ("AMX" in why if amx else "AVX-512 BF16" in why if avx512_bf16 else "fp32" in why)


def test_the_environment_can_stand_in_for_a_cpu_without_bf16(monkeypatch):
    from difflab.training import speed
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setenv("DIFFLAB_CPU_BF16", "0")
    assert speed.cpu_bf16_capability() == "none"
    assert speed.resolve_mixed_precision("auto", torch.device("cpu")) == "no"
    assert speed.resolve_mixed_precision("bf16", torch.device("cpu")) == "bf16"  # an explicit choice still holds
