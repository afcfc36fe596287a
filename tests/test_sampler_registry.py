"""The sampler registry (difflab.samplers.SAMPLERS) is the one place a sampler is named: the CLI's
choices and help, the labels, the study's specs, table and plot colours all read from it, and a
sampler registered there (here, a fake one) is usable everywhere without touching another module."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest
import torch

from difflab.cli.main import build_parser, main
from difflab.diffusion import DiffusionSchedule, Predictions, make_beta_schedule
from difflab.diffusion.objectives import noise_from_x0
from difflab.errors import ConfigError
from difflab.experiments.study import parse_sampler_specs
from difflab.experiments.study_results import results_table
from difflab.generation import generate_images, run_sampler
from difflab.generation.generate import sampler_label, sampler_timesteps
from difflab.samplers import SAMPLERS, SamplerEntry, get_sampler, sample_ddpm, timesteps_for
from difflab.viz.study_plot import OTHER_COLOUR, colour_of

TIMESTEPS = 50
SAMPLING_COMMANDS = ("sample", "progress", "fuse")


def sampler_choices(command: str) -> list[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in subparsers.choices[command]._actions if a.dest == "sampler")
    return list(action.choices)


def test_every_registered_sampler_is_complete_and_offered_by_the_cli(capsys):
    assert list(SAMPLERS) == ["ddpm", "ddim", "dpmpp-2m"]
    for name, entry in SAMPLERS.items():
        assert entry.name == name and callable(entry.function)
        assert entry.display_name and entry.colour.startswith("tab:") and entry.help
        assert entry.function.__doc__, f"{name}: a sampler's docstring names its paper"
        assert colour_of(name) == entry.colour
    assert len({entry.colour for entry in SAMPLERS.values()}) == len(SAMPLERS)
    for command in SAMPLING_COMMANDS:
        assert sampler_choices(command) == list(SAMPLERS)
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(SAMPLERS) + "}" in text
    for entry in SAMPLERS.values():
        assert f"{entry.name} = {' '.join(entry.help.split())}" in text
    assert "DDPM always runs all" not in text
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "ddpm, ddim, dpmpp-2m" in " ".join(capsys.readouterr().out.split())


def test_unknown_samplers_are_refused_by_their_library_name():
    with pytest.raises(ConfigError, match="sampler must be one of ddpm, ddim, dpmpp-2m; got 'euler'"):
        get_sampler("euler")
    with pytest.raises(ConfigError, match="eta applies to"):
        get_sampler("ddpm").check_eta(1.0)


@dataclass
class TinyModel:
    """What generation needs of a loaded model, with the exact denoiser of N(0.3, 0.1^2) per pixel."""
    schedule: DiffusionSchedule
    device = torch.device("cpu")

    def image_shape(self):
        return (1, 2, 2)

    def denoiser(self, clip=None):
        alpha_bar = self.schedule.alpha_bar

        def denoise(x, t):
            a, s2 = alpha_bar[t].sqrt().reshape(-1, 1, 1, 1), (1 - alpha_bar[t]).reshape(-1, 1, 1, 1)
            pred_x0 = 0.3 + a * 0.01 / (a * a * 0.01 + s2) * (x - a * 0.3)
            return Predictions(noise_from_x0(x, pred_x0, a, s2.sqrt()), pred_x0)
        return denoise


@pytest.fixture
def model():
    return TinyModel(DiffusionSchedule(make_beta_schedule("linear", TIMESTEPS)))


def test_ddpm_takes_steps_and_all_of_them_is_the_default(model):
    noise = torch.randn(3, *model.image_shape(), generator=torch.Generator().manual_seed(0))
    full = run_sampler(model, noise, "ddpm", generator=torch.Generator().manual_seed(1))
    assert torch.equal(full, run_sampler(model, noise, "ddpm", TIMESTEPS, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(full, sample_ddpm(model.denoiser(), noise, model.schedule,
                                         generator=torch.Generator().manual_seed(1)))
    seen = []
    run_sampler(model, noise, "ddpm", 10, callback=lambda state: seen.append(state["t"]))
    assert seen == timesteps_for(TIMESTEPS, 10) == sampler_timesteps("ddpm", 10, TIMESTEPS)
    assert sampler_label("ddpm", 10, TIMESTEPS) == "DDPM-10" and sampler_label("ddpm", None, TIMESTEPS) == "DDPM-50"
    specs = parse_sampler_specs("ddpm,ddpm:10,ddim", TIMESTEPS)
    assert [(s.sampler, s.steps) for s in specs] == [("ddpm", 50), ("ddpm", 10), ("ddim", 50)]
    with pytest.raises(ConfigError, match="ddpm has no eta"):
        parse_sampler_specs("ddpm:10:eta=1", TIMESTEPS)


def test_a_registered_sampler_is_usable_everywhere(model, monkeypatch):
    visited = []

    def sample_fake(denoiser, x, schedule, timesteps, *, callback=None, generator=None, progress=False):
        """A fake sampler: the first denoised guess, taken at timesteps[0]."""
        visited.append(list(timesteps))
        return denoiser(x, torch.full((x.shape[0],), timesteps[0], dtype=torch.long)).pred_x0

    monkeypatch.setitem(SAMPLERS, "fake", SamplerEntry("fake", sample_fake, "Fake", "tab:purple",
                                                       "one network evaluation", default_steps=3))
    first, images = next(generate_images(model, 4, batch_size=4, sampler="fake", seed=1))
    assert first == 0 and images.shape == (4, 1, 2, 2) and images.dtype == torch.uint8
    assert visited == [timesteps_for(TIMESTEPS, 3)]
    assert sampler_label("fake", None, TIMESTEPS) == "Fake-3"
    with pytest.raises(ConfigError, match="eta"):  # it declared no eta
        run_sampler(model, torch.zeros(1, 1, 2, 2), "fake", eta=0.5)

    assert "fake" in sampler_choices("sample") and "fake" in sampler_choices("fuse")
    spec, = parse_sampler_specs("fake:5", TIMESTEPS)
    assert (spec.sampler, spec.steps) == ("fake", 5)
    assert colour_of("fake") == "tab:purple" and colour_of("stylegan2") == OTHER_COLOUR
    row = {"label": "fake:5", "sampler": "fake", "steps": 5, "eta": 0.0, "network_evaluations": 5, "seconds": 1.0,
           "images_per_second": 1.0, "speedup": 1.0, "metrics": {}}
    _, rows, _ = results_table({"rows": [row], "baseline": "fake:5"})
    assert rows[0][:3] == ["Fake", "5", ""]


def test_sample_command_runs_respaced_ddpm(tmp_path):
    """`difflab sample --sampler ddpm --steps 10`, and --steps T gives DDPM's usual images exactly."""
    from difflab.config import TrainConfig
    from difflab.training import train

    run = tmp_path / "run"
    train(TrainConfig.from_dict(dict(data="shapes", out=str(run), image_size=8, channels=16, dim_mults="1,2",
                                     attn_resolutions="", res_blocks=1, timesteps=TIMESTEPS, batch_size=8, steps=1,
                                     grid_images=1, grid_sampler_steps=1, workers=0)).validate(), progress=False)
    outputs = {}
    for name, steps in (("ten", ["--steps", "10"]), ("all", ["--steps", str(TIMESTEPS)]), ("default", [])):
        out = tmp_path / name
        assert main(["sample", str(run), "-n", "2", "--batch-size", "2", "--sampler", "ddpm", *steps, "--format",
                     "png", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
        outputs[name] = (out / "1.png").read_bytes()
        manifest = json.loads((out / "difflab-sample.json").read_text())
        assert manifest["sampler"] == ("DDPM-10" if name == "ten" else f"DDPM-{TIMESTEPS}")
    assert outputs["all"] == outputs["default"] != outputs["ten"]
