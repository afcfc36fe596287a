"""Samplers on toy distributions whose exact denoiser E[x_0 | x_t] is known in closed form:
with the exact denoiser, DDPM and DDIM must reproduce the data distribution."""
import math

import pytest
import torch

from difflab.diffusion import DiffusionSchedule, Predictions, make_beta_schedule
from difflab.diffusion.objectives import noise_from_x0
from difflab.samplers import invert_ddim, sample_ddim, sample_ddpm, sample_dpm_solver

MEAN = torch.tensor([0.5, -0.3], dtype=torch.float64)
COVARIANCE = torch.tensor([[0.20, 0.08], [0.08, 0.10]], dtype=torch.float64)


def gaussian_denoiser(schedule: DiffusionSchedule, mean: torch.Tensor, covariance: torch.Tensor):
    """For x_0 ~ N(mu, S) and x_t = a x_0 + s eps: E[x_0|x_t] = mu + a S (a^2 S + s^2 I)^-1 (x_t - a mu)."""
    alpha_bar = schedule.float64["alpha_bar"]
    eye = torch.eye(len(mean), dtype=torch.float64)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Predictions:
        a, s2 = alpha_bar[t[0]].sqrt(), 1 - alpha_bar[t[0]]
        flat = x_t.reshape(x_t.shape[0], -1).double()
        gain = a * covariance @ torch.linalg.inv(a * a * covariance + s2 * eye)
        pred_x0 = (mean + (flat - a * mean) @ gain.T).to(x_t.dtype).reshape(x_t.shape)
        pred_noise = noise_from_x0(x_t, pred_x0, a.to(x_t.dtype), s2.sqrt().to(x_t.dtype))
        return Predictions(pred_noise, pred_x0)
    return denoise


def mixture_denoiser(schedule: DiffusionSchedule, centres: torch.Tensor, spread: float, weights: torch.Tensor):
    """1-D mixture of Gaussians: the posterior mean is the responsibility-weighted per-component mean."""
    alpha_bar = schedule.float64["alpha_bar"]

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Predictions:
        a, s2 = alpha_bar[t[0]].sqrt(), 1 - alpha_bar[t[0]]
        x = x_t.reshape(-1, 1).double()
        variance = a * a * spread**2 + s2
        log_resp = torch.log(weights) - (x - a * centres) ** 2 / (2 * variance)
        resp = torch.softmax(log_resp, dim=1)
        component_mean = centres + a * spread**2 / variance * (x - a * centres)
        pred_x0 = (resp * component_mean).sum(1).to(x_t.dtype).reshape(x_t.shape)
        return Predictions(noise_from_x0(x_t, pred_x0, a.float(), s2.sqrt().float()), pred_x0)
    return denoise


def moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = samples.reshape(samples.shape[0], -1).double()
    return flat.mean(0), torch.cov(flat.T)


@pytest.fixture(scope="module")
def schedule():
    return DiffusionSchedule(make_beta_schedule("linear", 1000))


# Deterministic DDIM is a first-order ODE solver: with few steps it shrinks the variance
# (measured with the exact denoiser: 27% at 20 steps, 11% at 50, 2% at 250, 0% at 1000),
# so its tolerance is checked where the discretisation error is small, and convergence separately.
@pytest.mark.parametrize("sampler,kwargs", [
    (sample_ddpm, {}),
    (sample_ddim, {"steps": 1000, "eta": 0.0}),
    (sample_ddim, {"steps": 1000, "eta": 1.0}),
    (sample_ddim, {"steps": 250, "eta": 0.0, "spacing": "quadratic"}),
    (sample_dpm_solver, {"steps": 50, "eta": 0.0}),
    (sample_dpm_solver, {"steps": 200, "eta": 1.0}),
])
def test_samplers_reproduce_gaussian_mean_and_covariance(schedule, sampler, kwargs):
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(20_000, 2, 1, 1, generator=generator)
    samples = sampler(gaussian_denoiser(schedule, MEAN, COVARIANCE), noise, schedule, generator=generator, **kwargs)
    mean, covariance = moments(samples)
    assert torch.allclose(mean, MEAN, atol=0.015), mean
    assert torch.allclose(covariance, COVARIANCE, atol=0.012), covariance


def test_ddim_error_shrinks_with_more_steps(schedule):
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    errors = []
    for steps in (10, 50, 250):
        noise = torch.randn(20_000, 2, 1, 1, generator=torch.Generator().manual_seed(0))
        _, covariance = moments(sample_ddim(denoise, noise, schedule, steps=steps))
        errors.append((covariance - COVARIANCE).abs().max().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01, errors


def covariance_error(sampler, schedule: DiffusionSchedule, **kwargs) -> float:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(20_000, 2, 1, 1, generator=generator, dtype=torch.float64)
    samples = sampler(gaussian_denoiser(schedule, MEAN, COVARIANCE), noise, schedule, generator=generator, **kwargs)
    return (moments(samples)[1] - COVARIANCE).abs().max().item()


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_solver_beats_ddim_at_the_same_steps(schedule, eta):
    """DPM-Solver++(2M) is second order: at 20 and 50 steps its covariance error is a fraction
    of DDIM's (measured, linear schedule: 0.019 vs 0.052 and 0.0045 vs 0.020 at eta 0;
    0.024 vs 0.083 and 0.014 vs 0.042 at eta 1)."""
    for steps in (20, 50):
        dpm = covariance_error(sample_dpm_solver, schedule, steps=steps, eta=eta)
        ddim = covariance_error(sample_ddim, schedule, steps=steps, eta=eta)
        assert dpm < ddim / 2.5, (steps, dpm, ddim)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dpm_solver_first_step_is_ddims(schedule, eta):
    """With two steps both updates are first order (no previous x0 yet, and the step onto t = 0
    is kept first order), where DPM-Solver++ with eta 0 / 1 is exactly DDIM with eta 0 / 1."""
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    noise = torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    results = [sampler(denoise, noise, schedule, steps=2, eta=eta, generator=torch.Generator().manual_seed(5))
               for sampler in (sample_ddim, sample_dpm_solver)]
    assert torch.allclose(*results, atol=1e-10)


def test_samplers_find_mixture_modes_with_their_weights(schedule):
    centres, weights, spread = torch.tensor([-0.6, 0.7], dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64), 0.08
    denoise = mixture_denoiser(schedule, centres, spread, weights)
    # Mode weights and centres hold at 50 DDIM steps; the within-mode spread needs more (see above).
    for sampler, kwargs, check_spread in [(sample_ddpm, {}, True), (sample_ddim, {"steps": 50}, False),
                                          (sample_ddim, {"steps": 250}, True), (sample_dpm_solver, {"steps": 50}, False)]:
        generator = torch.Generator().manual_seed(1)
        samples = sampler(denoise, torch.randn(10_000, 1, 1, 1, generator=generator), schedule,
                          generator=generator, **kwargs).flatten().double()
        right = samples > 0.05
        assert right.double().mean().item() == pytest.approx(0.7, abs=0.02)
        if check_spread:
            assert samples[right].std().item() == pytest.approx(spread, rel=0.15)
        assert samples[~right].mean().item() == pytest.approx(-0.6, abs=0.01)


def test_deterministic_ddim_is_reproducible_and_invertible(schedule):
    """Inversion then decoding returns the sample, with a first-order error (measured: 0.14 at
    50 steps, 0.033 at 250, 0.009 at 1000)."""
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    noise = torch.randn(256, 2, 1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    errors = []
    for steps in (50, 250, 1000):
        first = sample_ddim(denoise, noise, schedule, steps=steps)
        assert torch.equal(first, sample_ddim(denoise, noise, schedule, steps=steps))
        recovered = sample_ddim(denoise, invert_ddim(denoise, first, schedule, steps=steps), schedule, steps=steps)
        errors.append((recovered - first).abs().max().item())
    assert errors[0] > 3 * errors[1] > 9 * errors[2] and errors[2] < 0.02, errors


@pytest.mark.parametrize("sampler", [sample_ddim, sample_dpm_solver])
def test_callback_sees_every_step(schedule, sampler):
    seen = []
    noise = torch.randn(4, 2, 1, 1, generator=torch.Generator().manual_seed(3))
    sampler(gaussian_denoiser(schedule, MEAN, COVARIANCE), noise, schedule, steps=10,
                callback=lambda state: seen.append((state["i"], state["t"], state["x"].shape, state["pred_x0"].shape)))
    assert [s[0] for s in seen] == list(range(10))
    assert [s[1] for s in seen][0] == 999 and seen[-1][1] == 0
    assert all(s[2] == s[3] == (4, 2, 1, 1) for s in seen)


@pytest.mark.parametrize("sampler,kwargs", [(sample_ddpm, {}), (sample_dpm_solver, {"steps": 20, "eta": 1.0})])
def test_seeded_stochastic_samplers_are_reproducible(schedule, sampler, kwargs):
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    def run(seed: int):
        generator = torch.Generator().manual_seed(seed)
        return sampler(denoise, torch.randn(8, 2, 1, 1, generator=generator), schedule, generator=generator, **kwargs)
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


@pytest.mark.parametrize("sampler,kwargs", [(sample_ddpm, {}), (sample_ddim, {"eta": 1.0}),
                                            (sample_dpm_solver, {"eta": 1.0})])
def test_samplers_receive_their_timesteps(schedule, sampler, kwargs):
    """Each sampler visits exactly the timesteps it is handed (any strictly decreasing sequence, e.g.
    diffusers' trailing spacing), and the `steps`/`spacing`/`start_step` shorthand is
    `timesteps_for` bit for bit."""
    from difflab.samplers import timesteps_for

    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    noise = torch.randn(16, 2, 1, 1, generator=torch.Generator().manual_seed(6))
    for timesteps in ([999, 874, 749, 624, 499, 374, 249, 124], timesteps_for(1000, 12, "quadratic", start_step=600)):
        seen = []
        sampler(denoise, noise, schedule, timesteps, callback=lambda state: seen.append(state["t"]), **kwargs)
        assert seen == timesteps
    run = lambda **more: sampler(denoise, noise, schedule, generator=torch.Generator().manual_seed(7), **kwargs, **more)
    assert torch.equal(run(steps=12, spacing="quadratic", start_step=600),
                       run(timesteps=timesteps_for(1000, 12, "quadratic", start_step=600)))


@pytest.mark.parametrize("start_step", [999, 400, 1])
def test_one_ddpm_step_returns_the_x0_prediction(schedule, start_step):
    """Respaced onto one timestep t, DDPM's only step has alpha_bar_prev = 1: the posterior mean's
    coefficients are 1 on x0 and 0 on x_t, and no noise is added, so the output is pred_x0 exactly
    (this once crashed: a one-step schedule had an empty log-variance table)."""
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    out = sample_ddpm(denoise, x, schedule, steps=1, start_step=start_step)
    expected = denoise(x, torch.full((64,), start_step, dtype=torch.long)).pred_x0
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    one_step = DiffusionSchedule(make_beta_schedule("linear", 1000)[:1])
    assert torch.isfinite(one_step.posterior_log_variance).all() and one_step.posterior_log_variance.shape == (1,)
