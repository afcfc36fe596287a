"""The Keras DDIM lab's continuous cosine schedule, against the lab's closed forms: its rates, the
network's noise-level conditioning, and its reverse diffusion loop step for step; and the discrete
schedules' paths unchanged."""
from __future__ import annotations

import math

import pytest
import torch

from difflab.diffusion import make_denoiser
from difflab.diffusion.process import DiffusionSchedule, model_time
from difflab.diffusion.schedules import conditioning_of, keras_cosine_rates, make_beta_schedule
from difflab.samplers import sample_ddim
from difflab.samplers.timesteps import timesteps_for

T = 1000


def keras_schedule() -> DiffusionSchedule:
    return DiffusionSchedule(make_beta_schedule("keras-cosine", T), conditioning=conditioning_of("keras-cosine"))


def lab_rates(times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lab's diffusion_schedule, written out: angles between acos(0.95) and acos(0.02)."""
    start, end = math.acos(0.95), math.acos(0.02)
    angles = start + times.double() * (end - start)
    return torch.cos(angles), torch.sin(angles)  # signal rates, noise rates


def test_rates_match_the_lab_at_every_grid_time():
    times = torch.linspace(0, 1, 11, dtype=torch.float64)
    signal, noise = keras_cosine_rates(times)
    lab_signal, lab_noise = lab_rates(times)
    torch.testing.assert_close(signal, lab_signal, rtol=0, atol=1e-15)
    torch.testing.assert_close(noise, lab_noise, rtol=0, atol=1e-15)
    torch.testing.assert_close(signal**2 + noise**2, torch.ones(11, dtype=torch.float64))
    assert signal[0] == pytest.approx(0.95) and signal[-1] == pytest.approx(0.02)

    schedule = keras_schedule()
    grid = torch.arange(1, T + 1, dtype=torch.float64) / T  # timestep i is diffusion time (i + 1) / T
    lab_signal, lab_noise = lab_rates(grid)
    torch.testing.assert_close(schedule.float64["signal_rates"], lab_signal, rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule.float64["noise_rates"], lab_noise, rtol=0, atol=1e-12)


def test_the_network_sees_the_noise_level_and_the_discrete_schedules_see_the_timestep():
    schedule = keras_schedule()
    t = torch.tensor([0, 499, 999])
    _, noise = lab_rates((t + 1).double() / T)
    torch.testing.assert_close(schedule.network_time(t), (1000 * noise**2).float(), rtol=1e-6, atol=1e-4)
    for name in ("linear", "cosine", "sigmoid"):
        discrete = DiffusionSchedule(make_beta_schedule(name, 500), conditioning=conditioning_of(name))
        steps = torch.arange(500)
        assert torch.equal(discrete.network_time(steps), model_time(steps, 500))  # bit for bit as before


def test_trailing_spacing_visits_the_labs_times():
    for steps in (1, 5, 10, 20, 50):
        visited = timesteps_for(T, steps, "trailing")
        assert [(i + 1) / T for i in visited] == pytest.approx([1 - k / steps for k in range(steps)])


class NoiseLevelNetwork(torch.nn.Module):
    """A fixed 'network' predicting noise from the image and the noise variance, as the lab's
    network does: pred_noise = f(x, noise_variance)."""

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        variance = (conditioning / 1000).reshape(-1, 1, 1, 1)
        return torch.tanh(x) * variance.sqrt() + 0.1 * variance


def lab_reverse_diffusion(initial_noise: torch.Tensor, diffusion_steps: int) -> torch.Tensor:
    """The Keras lab's DiffusionModel.reverse_diffusion, line for line, with NoiseLevelNetwork."""
    network = NoiseLevelNetwork()
    step_size = 1.0 / diffusion_steps
    next_noisy_images = initial_noise.double()
    for step in range(diffusion_steps):
        noisy_images = next_noisy_images
        diffusion_times = torch.full((len(noisy_images),), 1.0 - step * step_size, dtype=torch.float64)
        signal_rates, noise_rates = (r.reshape(-1, 1, 1, 1) for r in lab_rates(diffusion_times))
        pred_noises = network(noisy_images, (1000 * noise_rates**2).reshape(-1))
        pred_images = (noisy_images - noise_rates * pred_noises) / signal_rates
        next_signal_rates, next_noise_rates = (r.reshape(-1, 1, 1, 1) for r in lab_rates(diffusion_times - step_size))
        next_noisy_images = next_signal_rates * pred_images + next_noise_rates * pred_noises
    return pred_images


@pytest.mark.parametrize("steps", [5, 20])
def test_ddim_on_the_keras_schedule_is_the_labs_reverse_diffusion(steps):
    schedule = keras_schedule()
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    denoiser = make_denoiser(NoiseLevelNetwork(), schedule, "pred_noise", clip="none")
    ours = sample_ddim(denoiser, noise, schedule, timesteps_for(T, steps, "trailing"))
    torch.testing.assert_close(ours.double(), lab_reverse_diffusion(noise, steps), rtol=1e-4, atol=1e-4)


def test_respacing_keeps_the_noise_level_conditioning():
    from difflab.samplers.respace import respace
    schedule = keras_schedule()
    kept = timesteps_for(T, 10, "trailing")
    respaced = respace(schedule, kept)
    assert respaced.conditioning == "noise_level"
    positions = torch.arange(len(kept))
    torch.testing.assert_close(respaced.network_time(positions), schedule.network_time(torch.tensor(sorted(kept))))


def test_the_keras_lab_recipe_trains_and_samples_end_to_end(tmp_path):
    from difflab.cli.main import main
    import json
    run = tmp_path / "lab"
    assert main(["train", "shapes", "--recipe", "keras-lab", "--image-size", "16", "--batch-size", "8",
                 "--channels", "8", "--steps", "4", "--save-every", "4", "--grid-images", "2", "--out", str(run),
                 "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["beta_schedule"], config["loss_norm"], config["objective"]) == ("keras-cosine", "l1", "pred_noise")
    out = tmp_path / "samples"
    assert main(["sample", str(run), "-n", "2", "--sampler", "ddim", "--steps", "5", "--spacing", "trailing",
                 "--out", str(out), "--no-progress"]) == 0
    assert len(list(out.glob("*.jpg"))) == 2
