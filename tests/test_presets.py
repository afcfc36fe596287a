"""Network defaults that follow the image size, --preset and --recipe, options declared once, and the
ETA a run prints after its first steps."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from contextlib import nullcontext

import pytest
import torch

from difflab.cli.main import build_parser, main
from difflab.cli.train import resolve_config
from difflab.config import TrainConfig, declaration, parse_int_tuple
from difflab.data.options import check_max_images, parse_cache
from difflab.errors import ConfigError
from difflab.network import UNet, UNetConfig, auto_attn_resolutions, auto_dim_mults, preset, preset_options
from difflab.network.config import auto_level_sizes
from difflab.network.presets import PRESET_PARAMETERS, PRESETS, SIZE_PRESETS
from difflab.recipes import DEMO, MNIST, RECIPES, recipe
from difflab.training.loop import eta_message, format_duration


def resolve(tmp_path, *flags: str):
    return resolve_config(build_parser().parse_args(["train", "shapes", "--out", str(tmp_path / "run"), *flags]))


# ---- the size rule -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, levels, dim_mults, attention", [
    (28, (28, 14, 7), (1, 2, 4), (7,)),
    (32, (32, 16, 8), (1, 2, 4), (8,)),
    (64, (64, 32, 16), (1, 2, 4), (16,)),  # the network difflab always had at 64 px
    (96, (96, 48, 24, 12), (1, 1, 2, 4), (24,)),
    (128, (128, 64, 32, 16), (1, 1, 2, 4), (32,)),
    (256, (256, 128, 64, 32, 16), (1, 1, 1, 2, 4), (32,)),  # attention on no map over 32 px
    (16, (16, 8, 4), (1, 2, 4), (4,)),
    (30, (30, 15), (1, 2), ()),  # halves once: no level at a quarter of it (the middle block attends)
    (27, (27,), (1,), ()),
])
def test_the_size_rule(size, levels, dim_mults, attention):
    assert auto_level_sizes(size) == levels
    assert auto_dim_mults(size) == dim_mults
    assert auto_attn_resolutions(size, dim_mults) == attention
    config = UNetConfig.for_image_size(size)
    config.validate()
    assert config.level_resolutions == levels


def test_the_defaults_at_64_px_are_exactly_the_old_network():
    config = TrainConfig(data="shapes", out="x").validate()
    assert (config.image_size, config.channels, config.dim_mults, config.attn_resolutions) == (64, 64, "1,2,4", "16")
    from difflab.build import unet_config
    assert unet_config(config, 3) == UNetConfig()  # the library's default: (1, 2, 4), attention at 16
    with torch.device("meta"):
        assert UNet(unet_config(config, 3)).num_parameters() == 16_432_195


@pytest.mark.parametrize("size", [28, 128])
def test_common_sizes_work_with_the_defaults(tmp_path, size):
    """The issue: `--image-size 128` and `--image-size 28` failed with 'feature-map size 16 does not occur'."""
    from difflab.families import get_family
    config = resolve(tmp_path, "--image-size", str(size))
    get_family("diffusion").check(config)
    assert config.attn_resolutions == {28: "7", 128: "32"}[size]


def test_explicit_values_win_over_auto(tmp_path):
    config = resolve(tmp_path, "--image-size", "128", "--dim-mults", "1,2,4")
    assert (config.dim_mults, config.attn_resolutions) == ("1,2,4", "32")  # attention follows the given levels
    config = resolve(tmp_path, "--image-size", "128", "--attn-resolutions", "16,8")
    assert (config.dim_mults, config.attn_resolutions) == ("1,1,2,4", "16,8")  # not a level: refused by check
    assert resolve(tmp_path, "--attn-resolutions", "").attn_resolutions == ""
    with pytest.raises(SystemExit):
        main(["train", "shapes", "--out", str(tmp_path / "r"), "--image-size", "128", "--attn-resolutions", "16,8"])


def test_the_run_saves_the_resolved_network_and_resumes_with_auto(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "shapes", "--out", str(run), "--image-size", "16", "--channels", "16", "--res-blocks", "1",
            "--batch-size", "4", "--timesteps", "50", "--grid-images", "0", "--workers", "0", "--no-progress"]
    assert main([*args, "--steps", "1"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["dim_mults"], saved["attn_resolutions"]) == ("1,2,4", "4")
    from difflab.training.checkpoint import load_checkpoint
    assert load_checkpoint(run, groups=()).config["dim_mults"] == "1,2,4"
    # `auto` on resume means the run's own value, whatever the rule would say today.
    assert main([*args, "--steps", "2", "--resume", "--dim-mults", "auto"]) == 0
    assert load_checkpoint(run, groups=()).step == 2


# ---- presets ---------------------------------------------------------------------------------------------

def test_size_presets_cover_the_common_sizes():
    assert {config.image_size for config in SIZE_PRESETS.values()} == {28, 32, 64, 96, 128, 256}
    assert SIZE_PRESETS["64"] == PRESETS["base-64"] == UNetConfig()
    for name in ("mnist-28", "ddpm-cifar10-32", "base-64", "ddpm-peer-64"):  # the old names still work
        assert name in PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_trains_one_step_at_its_size(tmp_path, name):
    from difflab.build import build_network
    from difflab.families import StepContext
    from difflab.families.diffusion import DiffusionTrainer

    config = resolve(tmp_path, "--preset", name, "--batch-size", "1", "--timesteps", "100")
    expected = PRESETS[name]
    assert config.image_size == expected.image_size
    channels = expected.image_channels
    with torch.device("meta"):
        assert UNet(dataclasses.replace(expected)).num_parameters() == PRESET_PARAMETERS[name]
        assert build_network(config, channels).num_parameters() == PRESET_PARAMETERS[name]
    torch.manual_seed(0)
    trainer = DiffusionTrainer(config, channels, torch.device("cpu"))
    images = torch.rand(1, channels, config.image_size, config.image_size) * 2 - 1
    trainer.prepare(lambda *modules: modules, images, compile=False, cuda_graphs=False)
    before = [parameter.detach().clone() for parameter in trainer.model.parameters()]
    context = StepContext(step=0, run_seconds=0.0, generator=torch.Generator().manual_seed(0), autocast=nullcontext,
                          backward=lambda loss: loss.backward(), no_sync=lambda module: nullcontext(),
                          clip_grad_norm=torch.nn.utils.clip_grad_norm_)
    loss = trainer.train_step(images, context)["loss"]
    assert torch.isfinite(loss)
    # (A fresh U-Net's output layer is zero, so its first step moves that layer alone.)
    assert any(not torch.equal(old, new) for old, new in zip(before, trainer.model.parameters()))


def test_a_preset_sets_the_network_and_flags_win(tmp_path):
    config = resolve(tmp_path, "--preset", "128", "--channels", "32")
    assert (config.image_size, config.channels, config.dim_mults, config.attn_resolutions) == (128, 32, "1,1,2,4", "32")
    # With an explicit size, the preset's network at that size: attention stays at the same levels.
    config = resolve(tmp_path, "--preset", "mnist-28", "--image-size", "56")
    assert (config.image_size, config.dim_mults, config.attn_resolutions) == (56, "1,2,2", "28,14")
    assert preset_options("mnist-28", 56)["attn_resolutions"] == "28,14"
    file = tmp_path / "run.toml"
    file.write_text('preset = "32"\nres_blocks = 1\n')
    config = resolve(tmp_path, "--config", str(file))
    assert (config.image_size, config.channels, config.res_blocks) == (32, 32, 1)
    file = tmp_path / "run.yaml"
    file.write_text("preset: 128\nrecipe: demo\n")  # a number names the size preset
    config = resolve(tmp_path, "--config", str(file))
    assert (config.image_size, config.dim_mults, config.lr) == (128, "1,1,2,4", DEMO["lr"])


def test_a_recipe_and_an_override(tmp_path):
    config = resolve(tmp_path, "--recipe", "mnist", "--steps", "10", "--channels", "8")
    expected = {**MNIST, "max_minutes": 8.0, "steps": 10, "channels": 8, "data": "shapes"}  # the positional data wins
    assert {name: getattr(config, name) for name in expected} == expected
    assert resolve_config(build_parser().parse_args(["train", "--recipe", "demo", "--out", str(tmp_path)])).data == "shapes"
    config = resolve(tmp_path, "--recipe", "mnist-gpu-minute")
    assert (config.batch_size, config.channels, config.dim_mults, config.max_minutes) == (512, 64, "1,2,2", 1.0)
    config = resolve(tmp_path, "--recipe", "mnist", "--preset", "28")  # the preset's network beats the recipe's
    assert (config.channels, config.attn_resolutions, config.lr) == (32, "7", MNIST["lr"])
    config = resolve(tmp_path, "--recipe", "demo")
    assert all(getattr(config, name) == value for name, value in DEMO.items())
    assert resolve(tmp_path, "--recipe", "stylegan2-mnist").model == "stylegan2"
    config = resolve(tmp_path, "--recipe", "keras-lab")
    assert (config.beta_schedule, config.objective, config.loss_norm, config.dim_mults) == \
        ("keras-cosine", "pred_noise", "l1", "1,2,3,4")
    assert set(RECIPES) == {"mnist", "mnist-gpu-minute", "demo", "stylegan2-mnist", "keras-lab"}


@pytest.mark.parametrize("flags, message", [
    (["--preset", "512"], "--preset must be one of 28, 32, 64"),
    (["--recipe", "cifar"], "--recipe must be one of mnist, mnist-gpu-minute, demo"),
    (["--preset", "64", "--model", "stylegan2"], "--preset '64' sets a diffusion U-Net; it does not apply to --model"),
])
def test_bad_preset_and_recipe_names_fail_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "never-created"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "shapes", "--out", str(out), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_help_lists_presets_and_recipes_one_line_each(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in [*PRESETS, *RECIPES]:
        assert re.search(rf"^  {re.escape(name)} +\S", text, re.MULTILINE), name
    assert "256 px: 64 ch x 1,1,1,2,4 (256/128/64/32/16 px), attention 32; 16.93M params" in text


# ---- options declared once ----------------------------------------------------------------------------------

def test_choices_come_from_the_registries():
    from difflab.diffusion import BETA_SCHEDULES, CLIPPING, LOSS_WEIGHTINGS, OBJECTIVES
    assert declaration("beta_schedule")["choices"] == tuple(BETA_SCHEDULES)
    assert declaration("objective")["choices"] == tuple(OBJECTIVES)
    assert declaration("loss_weighting")["choices"] == tuple(LOSS_WEIGHTINGS)
    assert declaration("clip")["choices"] == tuple(CLIPPING)


def test_the_network_and_data_checks_use_the_option_declarations():
    from difflab.data.options import check_image_size
    with pytest.raises(ConfigError) as from_options:
        TrainConfig(data="x", out="y", dropout=1.0).validate()
    with pytest.raises(ConfigError) as from_network:
        UNetConfig(dropout=1.0).validate()
    assert str(from_options.value) == str(from_network.value) == "dropout must be in [0, 1); got 1.0"
    with pytest.raises(ConfigError) as from_options:
        TrainConfig(data="x", out="y", image_size=0).validate()
    with pytest.raises(ConfigError) as from_data:
        check_image_size(0)
    assert str(from_options.value) == str(from_data.value) == "image_size must be positive; got 0"


@pytest.mark.parametrize("make", [
    lambda: UNetConfig(image_size=60, dim_mults=(1, 2, 4, 8), attn_resolutions=()).validate(),
    lambda: UNetConfig(attn_resolutions=(12,)).validate(),
    lambda: UNetConfig(base_channels=24, attn_head_channels=32, dim_mults=(1, 2), attn_resolutions=(32,)).validate(),
    lambda: preset("nope"),
    lambda: recipe("nope"),
    lambda: parse_cache("sometimes"),
    lambda: check_max_images(0),
    lambda: parse_int_tuple("1,x", "dim_mults"),
])
def test_library_errors_name_options_not_flags(make):
    with pytest.raises(ConfigError) as error:
        make()
    assert "--" not in str(error.value) and error.value.option


# ---- the ETA ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (0.2, "1 s"), (45, "45 s"), (59.4, "59 s"), (60, "1 min"), (432, "7 min 12 s"), (600, "10 min"),
    (38 * 60 + 20, "38 min"), (3599, "1 h"), (3 * 3600 + 10 * 60 + 4, "3 h 10 min"), (7200, "2 h"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_eta_message_and_the_time_limit():
    assert eta_message(100, 20_000, 0.573) == ("about 3 h 10 min at this rate for the remaining 19,900 steps "
                                               "(0.573 s a step)")
    # The MNIST recipe: 100,000 steps, but 8 minutes stop it first.
    text = eta_message(200, 100_000, 0.11, max_minutes=8, run_seconds=30)
    assert text.startswith("about 3 h 3 min at this rate for the remaining 99,800 steps")
    assert text.endswith("; the time limit of 8 min stops it first, in about 7 min 30 s, near step 4,290")
    assert "time limit" not in eta_message(200, 1_000, 0.11, max_minutes=8, run_seconds=30)  # the steps end first


def test_a_run_prints_its_eta_once_without_progress_bars(tmp_path, capsys, monkeypatch):
    import difflab.training.loop as loop
    monkeypatch.setattr(loop, "ETA_MIN_SECONDS", 0.0)  # measured over 10 steps, however fast they are
    started = time.monotonic()
    assert main(["train", "shapes", "--out", str(tmp_path / "run"), "--image-size", "8", "--channels", "16",
                 "--dim-mults", "1,2", "--res-blocks", "1", "--attn-resolutions", "", "--batch-size", "4",
                 "--steps", "30", "--log-every", "5", "--timesteps", "20", "--grid-images", "0", "--workers", "0",
                 "--save-every", "1000", "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "at this rate" in line]
    # Measured from the end of the first interval (step 5) over >= 10 steps: printed at step 15.
    assert len(lines) == 1 and re.match(r"difflab: about \d+ s at this rate for the remaining 15 steps", lines[0])
    assert time.monotonic() - started < 120
