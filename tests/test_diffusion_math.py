"""The diffusion math against closed forms: schedules, q_sample, the posterior, objectives."""
import math

import pytest
import torch

from difflab.diffusion import (DiffusionSchedule, clip_x0, make_beta_schedule, min_snr_weight,
                               predictions_from_output, q_posterior, q_sample)
from difflab.diffusion.objectives import training_target
from difflab.errors import ConfigError
from difflab.samplers import ddim_sigma, ddim_timesteps


@pytest.mark.parametrize("timesteps", [10, 1000, 4000])
def test_linear_schedule_matches_ddpm_with_1000_over_t_scaling(timesteps):
    betas = make_beta_schedule("linear", timesteps)
    scale = 1000 / timesteps
    assert betas[0].item() == pytest.approx(1e-4 * scale)
    assert betas[-1].item() == pytest.approx(0.02 * scale)
    expected_alpha_bar = torch.cumprod(1 - torch.linspace(1e-4 * scale, 0.02 * scale, timesteps, dtype=torch.float64), 0)
    assert torch.allclose(DiffusionSchedule(betas).float64["alpha_bar"], expected_alpha_bar, rtol=1e-12)


def test_cosine_alpha_bar_is_squared_cosine():
    timesteps, s = 1000, 0.008
    alpha_bar = DiffusionSchedule(make_beta_schedule("cosine", timesteps)).float64["alpha_bar"]
    f = lambda t: math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    for t in [1, 10, 250, 500, 900]:  # alpha_bar index t-1 is after t noising steps
        assert alpha_bar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)


def test_sigmoid_alpha_bar_matches_formula():
    timesteps = 100
    alpha_bar = DiffusionSchedule(make_beta_schedule("sigmoid", timesteps)).float64["alpha_bar"]
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = lambda u: (sig(3) - sig(6 * u - 3)) / (sig(3) - sig(-3))
    for t in [1, 30, 50, 90]:
        assert alpha_bar[t - 1].item() == pytest.approx(expected(t / timesteps), rel=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_schedules_are_valid(name):
    betas = make_beta_schedule(name, 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert (betas > 0).all() and (betas < 1).all()
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()
    assert alpha_bar[-1] < 0.01 and alpha_bar[0] > 0.99


def test_unknown_schedule_names_the_option():
    with pytest.raises(ConfigError, match="beta_schedule.*linear, cosine, sigmoid"):
        make_beta_schedule("quadratic", 1000)


def test_q_sample_has_the_closed_form_marginal():
    schedule = DiffusionSchedule(make_beta_schedule("linear", 1000))
    x0 = torch.tensor([0.7, -0.3, 0.0]).reshape(1, 3, 1, 1).repeat(200_000, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    for step in [0, 100, 500, 999]:
        t = torch.full((x0.shape[0],), step)
        x_t = q_sample(schedule, x0, t, torch.randn(x0.shape, generator=generator))
        alpha_bar = schedule.float64["alpha_bar"][step].item()
        assert torch.allclose(x_t.mean(0).flatten(), math.sqrt(alpha_bar) * x0[0].flatten(), atol=0.01)
        assert torch.allclose(x_t.var(0).flatten(), torch.full((3,), 1 - alpha_bar), rtol=0.02, atol=1e-4)


def test_posterior_matches_bayes_rule_for_gaussians():
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): a product of two Gaussians in x_{t-1}."""
    schedule = DiffusionSchedule(make_beta_schedule("cosine", 500))
    tables = schedule.float64
    x0, x_t = torch.tensor([[0.5]]).reshape(1, 1, 1, 1), torch.tensor([[-1.2]]).reshape(1, 1, 1, 1)
    for step in [1, 10, 250, 499]:
        alpha, beta = tables["alphas"][step].item(), tables["betas"][step].item()
        alpha_bar_prev = tables["alpha_bar"][step - 1].item()
        precision = alpha / beta + 1 / (1 - alpha_bar_prev)
        mean = (math.sqrt(alpha) / beta * x_t.item() + math.sqrt(alpha_bar_prev) / (1 - alpha_bar_prev) * x0.item()) / precision
        got_mean, got_log_var = q_posterior(schedule, x0, x_t, torch.tensor([step]))
        assert got_mean.item() == pytest.approx(mean, rel=1e-4)
        assert math.exp(got_log_var.item()) == pytest.approx(1 / precision, rel=1e-4)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_exact_outputs_recover_x0_and_noise(objective):
    schedule = DiffusionSchedule(make_beta_schedule("linear", 1000))
    generator = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(8, 3, 4, 4, generator=generator), torch.randn(8, 3, 4, 4, generator=generator)
    t = torch.tensor([0, 1, 10, 100, 400, 700, 900, 999])
    x_t = q_sample(schedule, x0, t, noise)
    signal, noise_rate = schedule.at("signal_rates", t, x0), schedule.at("noise_rates", t, x0)
    output = training_target(objective, x0, noise, signal, noise_rate)
    predictions = predictions_from_output(objective, output, x_t, signal, noise_rate)
    # x0 from noise divides by sqrt(alpha_bar) ~ 0.006 at t=999: compare with matching tolerance.
    assert torch.allclose(predictions.pred_x0[:6], x0[:6], atol=1e-4)
    assert torch.allclose(predictions.pred_noise[1:], noise[1:], atol=1e-3)


def test_min_snr_weights_equal_in_x0_space():
    """min(SNR, gamma) in x0-space, expressed in each objective's space."""
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0])
    x0_weight = snr.clamp(max=5.0)
    assert torch.allclose(min_snr_weight(snr, "pred_x0", 5.0), x0_weight)
    assert torch.allclose(min_snr_weight(snr, "pred_noise", 5.0) * snr, x0_weight)  # ||eps err||^2 = snr ||x0 err||^2
    assert torch.allclose(min_snr_weight(snr, "pred_v", 5.0) * (snr + 1), x0_weight)


def test_clipping():
    x = torch.tensor([[-3.0, 0.5, 2.0, 0.1]]).reshape(1, 1, 2, 2)
    assert clip_x0(x, "static").abs().max() == 1
    dynamic = clip_x0(x, "dynamic", percentile=0.5)
    assert dynamic.abs().max() <= 1 + 1e-6
    assert torch.equal(clip_x0(x, "none"), x)


def test_ddim_eta_one_over_all_steps_has_ddpm_variances():
    schedule = DiffusionSchedule(make_beta_schedule("linear", 1000))
    sequence = ddim_timesteps(1000, 1000)
    assert sequence == list(range(999, -1, -1))
    alpha_bar = schedule.float64["alpha_bar"]
    for t in [1, 2, 50, 500, 999]:
        sigma = ddim_sigma(alpha_bar[t], alpha_bar[t - 1], eta=1.0)
        assert (sigma**2).item() == pytest.approx(schedule.float64["posterior_variance"][t].item(), rel=1e-10)


def test_ddim_eta_one_mean_equals_ddpm_posterior_mean():
    """With eta=1 the DDIM update's mean sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps is DDPM's posterior mean."""
    schedule = DiffusionSchedule(make_beta_schedule("cosine", 1000))
    alpha_bar = schedule.float64["alpha_bar"]
    x0, eps = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.8, dtype=torch.float64)
    for t in [5, 400, 998]:
        x_t = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * eps
        sigma = ddim_sigma(alpha_bar[t], alpha_bar[t - 1], 1.0)
        ddim_mean = alpha_bar[t - 1].sqrt() * x0 + (1 - alpha_bar[t - 1] - sigma**2).sqrt() * eps
        ddpm_mean = schedule.float64["posterior_coef_x0"][t] * x0 + schedule.float64["posterior_coef_xt"][t] * x_t
        assert ddim_mean.item() == pytest.approx(ddpm_mean.item(), rel=1e-9, abs=1e-12)


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    quadratic = ddim_timesteps(1000, 10, "quadratic")
    assert quadratic[0] == 999 and quadratic[-1] == 0 and quadratic == sorted(set(quadratic), reverse=True)
    with pytest.raises(ConfigError, match="steps"):
        ddim_timesteps(100, 101)
