"""DDPM over a subsequence of the timesteps (respacing, samplers/respace.py; Nichol & Dhariwal 2021):
the respaced process against its closed form, the full-length respacing against plain DDPM bit
for bit, and respaced DDPM with the exact denoiser of a Gaussian, whose sampling chain is
linear-Gaussian, so the distribution it samples is known exactly."""
import pytest
import torch

from difflab.diffusion import DiffusionSchedule, make_beta_schedule
from difflab.diffusion.denoiser import reverse_step
from difflab.errors import ConfigError
from difflab.samplers import (ddim_sigma, respace, respaced_betas, sample_ddim, sample_ddpm, spaced_timesteps,
                              timesteps_for)

from test_samplers import COVARIANCE, MEAN, gaussian_denoiser, moments

T = 1000


@pytest.fixture(scope="module", params=["linear", "cosine"])
def schedule(request):
    return DiffusionSchedule(make_beta_schedule(request.param, T))


def kept_timesteps(steps: int, spacing: str = "uniform") -> list[int]:
    return sorted(timesteps_for(T, steps, spacing))


@pytest.mark.parametrize("steps,spacing", [(100, "uniform"), (10, "quadratic"), (1, "uniform")])
def test_respaced_betas_are_the_closed_form(schedule, steps, spacing):
    alpha_bar = schedule.float64["alpha_bar"]
    kept = kept_timesteps(steps, spacing)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[kept[:-1]]])
    closed_form = 1 - alpha_bar[kept] / previous
    betas = respaced_betas(schedule.float64["betas"], kept)
    torch.testing.assert_close(betas, closed_form, rtol=1e-9, atol=1e-12)
    respaced = respace(schedule, kept)
    assert respaced.timesteps == len(kept)
    # alpha_bar is unchanged at the kept steps: the respaced process has the same marginals there.
    torch.testing.assert_close(respaced.float64["alpha_bar"], alpha_bar[kept], rtol=1e-9, atol=1e-15)


def test_respaced_posterior_variance_is_the_closed_form(schedule):
    """q(x_{t_{i-1}} | x_{t_i}, x_0) has variance beta'_i (1 - a(t_{i-1})) / (1 - a(t_i)), which is
    DDIM's sigma^2 at eta = 1 between the same two timesteps."""
    alpha_bar = schedule.float64["alpha_bar"]
    kept = kept_timesteps(50)
    respaced = respace(schedule, kept)
    for i in range(1, len(kept)):
        a, a_prev = alpha_bar[kept[i]], alpha_bar[kept[i - 1]]
        closed_form = (1 - a / a_prev) * (1 - a_prev) / (1 - a)
        assert respaced.float64["posterior_variance"][i].item() == pytest.approx(closed_form.item(), rel=1e-9)
        assert closed_form.item() == pytest.approx(ddim_sigma(a, a_prev, 1.0).pow(2).item(), rel=1e-9)
    assert respaced.float64["posterior_variance"][0] == 0  # onto x_0: the posterior mean, no noise


def test_respacing_onto_every_timestep_changes_nothing(schedule):
    betas = schedule.float64["betas"]
    assert torch.equal(respaced_betas(betas, range(T)), betas)
    assert respace(schedule, range(T)) is schedule
    assert respace(schedule, range(31)) is schedule  # the first 31 steps, as DDPM from start_step 30 uses


def plain_ddpm(denoiser, x, schedule, generator, first=None):
    """DDPM as it was before respacing (Ho et al. 2020, Algorithm 2): every step from `first` to 0."""
    first = schedule.timesteps - 1 if first is None else first
    for step in range(first, -1, -1):
        t = torch.full((x.shape[0],), step, dtype=torch.long)
        _, pred_x0 = denoiser(x, t)
        noise = torch.randn(x.shape, dtype=x.dtype, generator=generator)
        x = reverse_step(schedule, pred_x0, x, t, noise)
    return x


def test_full_length_ddpm_is_plain_ddpm_bit_for_bit(schedule):
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    noise = torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(3))
    expected = plain_ddpm(denoise, noise, schedule, torch.Generator().manual_seed(4))
    for kwargs in ({}, {"steps": T}, {"timesteps": list(range(T - 1, -1, -1))}):
        got = sample_ddpm(denoise, noise, schedule, generator=torch.Generator().manual_seed(4), **kwargs)
        assert torch.equal(got, expected), kwargs
    part_way = plain_ddpm(denoise, noise, schedule, torch.Generator().manual_seed(4), first=30)
    assert torch.equal(sample_ddpm(denoise, noise, schedule, generator=torch.Generator().manual_seed(4),
                                   start_step=30), part_way)


def exact_chain_moments(schedule, timesteps):
    """Mean and covariance of x_0 from respaced DDPM with the exact Gaussian denoiser, in closed form:
    each step x_prev = A x_t + b + sqrt(v) z is affine in x_t, with A, b and v from the textbook
    posterior between consecutive kept steps (not from the code under test)."""
    alpha_bar = schedule.float64["alpha_bar"]
    eye = torch.eye(2, dtype=torch.float64)
    mean, covariance = torch.zeros(2, dtype=torch.float64), eye.clone()  # x at timesteps[0] ~ N(0, I)
    for i, step in enumerate(timesteps):
        a = alpha_bar[step]
        a_prev = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0, dtype=torch.float64)
        beta = 1 - a / a_prev
        gain = a.sqrt() * COVARIANCE @ torch.linalg.inv(a * COVARIANCE + (1 - a) * eye)  # E[x0|x_t] = mu + G(x_t - sqrt(a) mu)
        coef_x0, coef_xt = beta * a_prev.sqrt() / (1 - a), (1 - a_prev) * (1 - beta).sqrt() / (1 - a)
        A = coef_x0 * gain + coef_xt * eye
        b = coef_x0 * (MEAN - a.sqrt() * gain @ MEAN)
        variance = beta * (1 - a_prev) / (1 - a)
        mean, covariance = A @ mean + b, A @ covariance @ A.T + variance * eye
    return mean, covariance


@pytest.mark.parametrize("steps,spacing", [(100, "uniform"), (100, "quadratic"), (25, "uniform")])
def test_respaced_ddpm_samples_its_exact_distribution(schedule, steps, spacing):
    """Samples of respaced DDPM match the chain's exact moments (to sampling error), and are near the
    data's: the mean closely, the covariance up to the discretisation error of the "fixed small"
    variance, which shrinks it (measured, linear schedule, uniform spacing: 0.028 at 100 steps,
    0.044 at 50, 0.003 at 1000; the same error as DDIM with eta = 1, the same step)."""
    timesteps = timesteps_for(T, steps, spacing)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(20_000, 2, 1, 1, generator=generator, dtype=torch.float64)
    samples = sample_ddpm(gaussian_denoiser(schedule, MEAN, COVARIANCE), noise, schedule, timesteps,
                          generator=generator)
    mean, covariance = moments(samples)
    exact_mean, exact_covariance = exact_chain_moments(schedule, timesteps)
    torch.testing.assert_close(mean, exact_mean, rtol=0, atol=0.01)
    torch.testing.assert_close(covariance, exact_covariance, rtol=0, atol=0.006)
    assert torch.allclose(mean, MEAN, atol=0.015), mean
    if steps >= 100:  # at 25 steps the shrinkage is large (0.2 -> 0.13 for the first variance)
        assert torch.allclose(covariance, COVARIANCE, atol=0.035), covariance


def test_respaced_ddpm_error_shrinks_with_more_steps(schedule):
    errors = [(exact_chain_moments(schedule, timesteps_for(T, steps))[1] - COVARIANCE).abs().max().item()
              for steps in (20, 100, 500, 1000)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.005, errors


def test_respaced_ddpm_is_ddim_with_eta_1_on_the_same_timesteps(schedule):
    """DDIM with eta = 1 takes DDPM's posterior step between any two timesteps (DDIM eq. 16), so
    over the same subsequence and noise stream the two samplers agree."""
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    noise = torch.randn(256, 2, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for timesteps in (timesteps_for(T, 40, "quadratic"), timesteps_for(T, 7, start_step=400)):
        ddpm = sample_ddpm(denoise, noise, schedule, timesteps, generator=torch.Generator().manual_seed(2))
        ddim = sample_ddim(denoise, noise, schedule, timesteps, eta=1.0, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(ddpm, ddim, rtol=0, atol=1e-5)


def test_ddpm_visits_the_timesteps_it_is_given(schedule):
    seen = []
    noise = torch.randn(4, 2, 1, 1, generator=torch.Generator().manual_seed(3))
    sample_ddpm(gaussian_denoiser(schedule, MEAN, COVARIANCE), noise, schedule, steps=10,
                callback=lambda state: seen.append(state["t"]))
    assert seen == spaced_timesteps(T, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    seen.clear()
    sample_ddpm(gaussian_denoiser(schedule, MEAN, COVARIANCE), noise, schedule, [900, 500, 20],
                callback=lambda state: seen.append(state["t"]))
    assert seen == [900, 500, 20]  # a sequence that stops short of 0 ends on the posterior mean from 20


def test_timesteps_are_checked(schedule):
    denoise = gaussian_denoiser(schedule, MEAN, COVARIANCE)
    noise = torch.randn(2, 2, 1, 1)
    for bad in ([], [5, 5, 0], [0, 5], [T, 0], [-1]):
        with pytest.raises(ConfigError, match="timesteps"):
            sample_ddpm(denoise, noise, schedule, bad)
    with pytest.raises(ConfigError, match="steps"):
        sample_ddpm(denoise, noise, schedule, [999, 0], steps=3)
    with pytest.raises(ConfigError, match="steps must be between 1 and 31"):
        timesteps_for(T, 50, start_step=30)
    assert timesteps_for(T, start_step=30) == list(range(30, -1, -1))
