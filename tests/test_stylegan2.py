"""StyleGAN2 family (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN";
ADA from "Training Generative Adversarial Networks with Limited Data"): the building blocks against
closed forms and independent references, exact resume, checkpoints, and the CPU quality bar."""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
import types
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from difflab.errors import ConfigError
from difflab.families.base import StepContext
from difflab.families.stylegan2 import (FAMILY, STYLEGAN2_MNIST, StyleGAN2Options, StyleGAN2Trainer,
                                        check_stylegan2_options, load_stylegan2_generator)
from difflab.families.stylegan2.augment import AdaptiveAugment, ada_augment, diff_augment
from difflab.families.stylegan2.losses import lazy_adam_hyperparameters, r1_loss, r1_penalty
from difflab.families.stylegan2.networks import EqualConv2d, EqualLinear, MinibatchStd, modulated_conv2d
from difflab.families.stylegan2.ops import downsample2d, setup_filter, upsample2d
from difflab.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


def tiny_config(**overrides):
    values = {f.name: f.default for f in dataclasses.fields(StyleGAN2Options)}
    values.update(image_size=16, batch_size=8, steps=10, max_minutes=0.0, seed=0, compile="off", z_dim=16,
                  w_dim=16, channel_base=256, channel_max=32, mbstd_group=4, grid_images=4)
    values.update(overrides)
    return types.SimpleNamespace(**values)


def step_context(step: int, seed: int = 0) -> StepContext:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return StepContext(step=step, run_seconds=0.0, generator=generator, autocast=nullcontext,
                       backward=lambda loss: loss.backward(), no_sync=lambda module: nullcontext(),
                       clip_grad_norm=lambda params, norm: None)


def data_batch(step: int, batch: int = 8, channels: int = 3, size: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(10_000 + step)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


def make_trainer(config) -> StyleGAN2Trainer:
    trainer = StyleGAN2Trainer(config, 3, "cpu")
    trainer.prepare(lambda *objects: objects, data_batch(0))
    return trainer


def run_steps(trainer: StyleGAN2Trainer, start: int, stop: int) -> list[dict]:
    return [{k: v.clone() for k, v in trainer.train_step(data_batch(s), step_context(s)).items()}
            for s in range(start, stop)]


def cloned_state(trainer):
    tensors, meta = trainer.state()
    return {g: {k: v.detach().clone() for k, v in group.items()} for g, group in tensors.items()}, meta


# ---- building blocks -----------------------------------------------------------------------------

def test_demodulation_gives_unit_variance_for_any_style():
    """Closed form: for i.i.d. N(0, 1) inputs, output o of a demodulated conv is a sum of
    independent terms with weights w_oik s_i d_o whose squares sum to 1, so Var = 1 exactly,
    whatever the style s. Checked on interior pixels (no zero padding) over many samples."""
    torch.manual_seed(0)
    weight = torch.randn(16, 24, 3, 3) * 0.7
    for styles in (torch.ones(1, 24), torch.rand(1, 24) * 5 + 0.1, torch.randn(1, 24).exp() * 3):
        x = torch.randn(200, 24, 12, 12)
        y = modulated_conv2d(x, weight, styles.expand(200, -1), demodulate=True)[:, :, 1:-1, 1:-1]
        std_per_channel = y.transpose(0, 1).reshape(16, -1).std(dim=1)
        assert torch.allclose(std_per_channel, torch.ones(16), atol=0.02), std_per_channel
        # without demodulation the variance is sum_{i,k} (w_oik s_i)^2 instead
        y_raw = modulated_conv2d(x, weight, styles.expand(200, -1), demodulate=False)[:, :, 1:-1, 1:-1]
        expected = ((weight * styles[0][None, :, None, None]).square().sum(dim=[1, 2, 3])).sqrt()
        measured = y_raw.transpose(0, 1).reshape(16, -1).std(dim=1)
        assert torch.allclose(measured / expected, torch.ones(16), atol=0.02)


@pytest.mark.parametrize("fan_in", [8, 64, 512])
def test_equalised_learning_rate_gives_he_scaled_weights(fan_in):
    """Stored weights are N(0, 1); the effective weight std is 1/sqrt(fan_in), and with the lrelu
    gain sqrt(2) applied after the activation the layer has He's gain sqrt(2)/sqrt(fan_in)."""
    torch.manual_seed(fan_in)
    linear = EqualLinear(fan_in, 4096)
    assert abs(linear.weight.std().item() - 1) < 0.02
    assert abs(linear.effective_weight().std().item() * math.sqrt(fan_in) - 1) < 0.02
    slow = EqualLinear(fan_in, 4096, lr_mul=0.01)
    assert abs(slow.effective_weight().std().item() * math.sqrt(fan_in) - 1) < 0.02  # same init, slower steps
    assert abs(slow.weight.std().item() * 0.01 - 1) < 0.02
    conv = EqualConv2d(fan_in // 8 or 1, 2048, 3)
    conv_fan_in = (fan_in // 8 or 1) * 9
    assert abs(conv.effective_weight().std().item() * math.sqrt(conv_fan_in) - 1) < 0.03
    # He: an lrelu layer keeps the second moment of unit-variance inputs
    layer = EqualLinear(fan_in, 4096, activation="lrelu")
    out = layer(torch.randn(256, fan_in))
    assert abs(out.square().mean().item() - 1) < 0.1


def test_r1_matches_autograd_closed_form():
    """D(x) = sum(a * x^2): grad = 2 a x, penalty = sum((2 a x)^2) per sample."""
    torch.manual_seed(0)
    a = torch.randn(1, 2, 3, 3)
    x = torch.randn(5, 2, 3, 3, requires_grad=True)
    logits = (a * x.square()).sum(dim=[1, 2, 3])
    penalty = r1_penalty(x, logits)
    expected = (2 * a * x.detach()).square().sum(dim=[1, 2, 3])
    assert torch.allclose(penalty, expected, rtol=1e-5)
    loss = r1_loss(penalty, gamma=10.0, interval=16)
    assert torch.allclose(loss, expected.mean() * 5.0 * 16, rtol=1e-5)
    loss.backward()  # differentiable (create_graph): d/dx of the penalty term, closed form
    assert torch.allclose(x.grad, 8 * a.square() * x.detach() * 5.0 * 16 / 5, rtol=1e-4)


def test_lazy_regularisation_adam_correction():
    lr, betas = lazy_adam_hyperparameters(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert lazy_adam_hyperparameters(0.0025, (0.0, 0.99), 4, regularised=False) == (0.0025, (0.0, 0.99))


@pytest.mark.parametrize("overconfident", [True, False])
def test_ada_p_moves_toward_target(overconfident):
    ada = AdaptiveAugment(target=0.6, interval=4, kimg=1, batch_size=10, device="cpu")
    ada.p.fill_(0.5)
    logits = torch.full([10], 3.0 if overconfident else -3.0)
    for _ in range(4):
        ada.accumulate(logits)
    ada.adjust()
    step = 10 * 4 / 1000
    assert ada.p.item() == pytest.approx(0.5 + step if overconfident else 0.5 - step)
    assert ada.sign_count.item() == 0  # statistics restart each interval
    for _ in range(200):  # p stays in [0, 1]
        ada.accumulate(logits)
        ada.adjust()
    assert ada.p.item() == (1.0 if overconfident else 0.0)


def test_ada_augment_is_identity_at_p0_and_exact_for_pixel_maps():
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(ada_augment(x, torch.tensor(0.0), generator), x, atol=1e-5)
    y = ada_augment(x, torch.tensor(0.7), generator)
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.allclose(y, x)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(ada_augment(x, torch.tensor(0.7), g1), ada_augment(x, torch.tensor(0.7), g2))
    assert ada_augment(x[:, :1], torch.tensor(1.0), generator).shape == (6, 1, 16, 16)
    x.requires_grad_(True)
    ada_augment(x, torch.tensor(1.0), generator).sum().backward()  # differentiable for G
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_diff_augment_shapes_and_determinism():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a = diff_augment(x, torch.Generator().manual_seed(1))
    b = diff_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    # the cutout square (half the side) is zero; at worst clipped to a quarter by the border
    assert ((a == 0).flatten(1).float().mean(1) >= 1 / 16).all()


def _reference_resample(image: np.ndarray, up: int, down: int, pad0: int, pad1: int, gain: float) -> np.ndarray:
    """Independent numpy upfirdn: zero insertion, padding, explicit 2-D correlation with the
    flipped separable [1,3,3,1] kernel, decimation."""
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    kernel = np.outer(taps, taps) / np.outer(taps, taps).sum() * gain
    h, w = image.shape
    zeros = np.zeros((h * up, w * up))
    zeros[::up, ::up] = image
    padded = np.pad(zeros, ((pad0, pad1), (pad0, pad1)))
    k = kernel[::-1, ::-1]
    out_h, out_w = padded.shape[0] - 3, padded.shape[1] - 3
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[i, j] = (padded[i:i + 4, j:j + 4] * k).sum()
    return out[::down, ::down]


def test_up_and_downsampling_match_independent_reference():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((7, 7))
    x = torch.tensor(image, dtype=torch.float32)[None, None]
    f = setup_filter()
    up = upsample2d(x, f)[0, 0].double().numpy()
    assert up.shape == (14, 14)
    assert np.allclose(up, _reference_resample(image, 2, 1, 2, 1, 4.0), atol=1e-5)
    image = rng.standard_normal((8, 8))
    x = torch.tensor(image, dtype=torch.float32)[None, None]
    down = downsample2d(x, f)[0, 0].double().numpy()
    assert down.shape == (4, 4)
    assert np.allclose(down, _reference_resample(image, 1, 2, 1, 1, 1.0), atol=1e-5)
    # gains: a constant image stays constant away from the border
    ones = torch.ones(1, 1, 8, 8)
    assert torch.allclose(upsample2d(ones, f)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))
    assert torch.allclose(downsample2d(ones, f)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))


def test_minibatch_std_matches_closed_form():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 2, 2)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], x)
    groups = 8 // 4
    for n in range(8):
        members = x[n % groups::groups]  # sample n is grouped with n + k * (N / G)
        expected = members.std(dim=0, unbiased=False).mean()
        assert torch.allclose(out[n, 3], torch.full((2, 2), expected.item()), atol=1e-4)
    assert MinibatchStd(group_size=4).group_for(6) == 3  # a divisor of the batch when 4 does not divide it


# ---- options --------------------------------------------------------------------------------------

def test_options_check_image_size_and_ranges():
    for size in (8, 16, 64, 256):
        check_stylegan2_options(tiny_config(image_size=size))
    for size in (4, 24, 48, 100):
        with pytest.raises(ConfigError, match="image_size"):
            check_stylegan2_options(tiny_config(image_size=size))
    with pytest.raises(ConfigError, match="style_mixing"):
        check_stylegan2_options(tiny_config(style_mixing=1.5))
    with pytest.raises(ConfigError, match="augment"):
        check_stylegan2_options(tiny_config(augment="bogus"))
    assert FAMILY.name == "stylegan2" and FAMILY.options is StyleGAN2Options
    assert set(STYLEGAN2_MNIST) - {"model", "data", "image_size", "image_channels", "hflip", "batch_size", "steps",
                                   "seed"} <= {f.name for f in dataclasses.fields(StyleGAN2Options)}


# ---- training -------------------------------------------------------------------------------------

def test_trainer_step_logs_finite_scalars_and_preview_is_fixed():
    trainer = make_trainer(tiny_config(pl_weight=2.0, augment="diffaug"))
    logs = run_steps(trainer, 0, 3)
    assert set(logs[0]) >= {"loss_g", "loss_d", "r1", "aug_p", "real_sign", "d_real", "d_fake", "pl"}
    assert all(v.dim() == 0 and torch.isfinite(v) for entry in logs for v in entry.values())
    assert logs[0]["r1"] > 0  # R1 ran at step 0
    assert trainer.cur_nimg == 3 * 8
    first, second = trainer.preview(4, seed=5), trainer.preview(4, seed=5)
    assert first.shape == (4, 3, 16, 16) and torch.equal(first, second) and first.abs().max() <= 1
    assert trainer.after_log({k: v.item() for k, v in logs[-1].items()}, 3) is None
    assert "diverged" in trainer.after_log({"loss_g": float("nan")}, 3)
    assert "collapsed" in trainer.after_log({"d_real": 15.0, "d_fake": -12.0}, 3)


def test_exact_resume_n_plus_m_equals_n_then_m():
    config = tiny_config(pl_weight=2.0, pl_interval=2, r1_interval=2, ada_interval=2, ada_kimg=1,
                         style_mixing=0.9, augment="ada")
    straight = make_trainer(config)
    straight_logs = run_steps(straight, 0, 6)
    first = make_trainer(config)
    run_steps(first, 0, 3)
    tensors, meta = cloned_state(first)
    resumed = make_trainer(config)
    resumed.load_state(tensors, meta)
    resumed_logs = run_steps(resumed, 3, 6)
    expected, _ = cloned_state(straight)
    got, got_meta = cloned_state(resumed)
    assert set(expected) == set(got) >= {"G", "D", "G_ema", "opt_g", "opt_d", "augment"}
    for group in expected:
        assert set(expected[group]) == set(got[group]), group
        for name in expected[group]:
            assert torch.equal(expected[group][name], got[group][name]), f"{group}.{name}"
    assert expected["augment"]["p"] > 0  # ADA actually moved, so its state was exercised
    assert got_meta["cur_nimg"] == straight.cur_nimg == 6 * 8
    for a, b in zip(straight_logs[3:], resumed_logs):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip_and_generator(tmp_path):
    config = tiny_config()
    trainer = make_trainer(config)
    run_steps(trainer, 0, 2)
    tensors, meta = trainer.state()
    config_dict = vars(config)
    path = save_checkpoint(tmp_path, Checkpoint(step=2, config=config_dict, tensors=tensors, meta=meta))
    loaded = load_checkpoint(path)
    restored = make_trainer(config)
    restored.load_state(loaded.tensors, loaded.meta)
    original, _ = cloned_state(trainer)
    again, _ = cloned_state(restored)
    for group in original:
        for name in original[group]:
            assert torch.equal(original[group][name], again[group][name]), f"{group}.{name}"
    generator = load_stylegan2_generator(loaded, "cpu", "ema")
    assert generator.family == "stylegan2" and generator.image_shape() == (3, 16, 16)
    assert generator.describe(truncation=0.75) == "StyleGAN2, psi 0.75"
    batches = list(generator.generate(5, batch_size=2, seed=3))
    assert [first for first, _ in batches] == [0, 2, 4]
    images = torch.cat([b for _, b in batches])
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 16, 16)
    again = list(generator.generate(5, batch_size=2, seed=3))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(batches, again))  # seeded per batch
    assert not torch.equal(images, torch.cat([b for _, b in generator.generate(5, 2, seed=4)]))
    assert not torch.equal(images, torch.cat([b for _, b in generator.generate(5, 2, seed=3, truncation=0.5)]))
    frames = generator.interpolate_w(generator.latent_for_seed(1), generator.latent_for_seed(2), [0.0, 0.5, 1.0])
    assert frames.shape == (3, 3, 16, 16) and frames.dtype == torch.uint8
    model = load_stylegan2_generator(loaded, "cpu", "model")
    assert not torch.equal(next(model.network.parameters()), next(generator.network.parameters()))
    with pytest.raises(ConfigError, match="weights"):
        load_stylegan2_generator(loaded, "cpu", "other")


# ---- quality --------------------------------------------------------------------------------------

def load_featnet(shared_eval):
    spec = importlib.util.spec_from_file_location("featnet", shared_eval / "featnet.py")
    featnet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(featnet)
    return featnet.load(str(shared_eval / "featnet-mnist.safetensors"))


# The bar is about half of what the recipe measured (2026-12-02, shared 2-core machine, 1 thread,
# other jobs running): 800 steps in 227 s, confident 8.6% of 256 samples, 2 classes (8 and 9).
# The run is seeded end to end, so it reproduces on the same software; the margin is for other
# CPUs' floating-point kernels. A GAN this short is far from converged: the bar guards against
# a broken trainer (0% and noise), not for quality.
MNIST_GAN_MIN_RATE = 0.04
MNIST_GAN_MIN_CLASSES = 1


@pytest.mark.slow
def test_stylegan2_mnist_recipe_draws_recognisable_digits(shared_data, shared_eval):
    """The STYLEGAN2_MNIST recipe, driven directly (a plain loop over `batch_indices`), for its step
    budget (800 steps, about 4 minutes on one CPU thread); 256 samples from G_ema at psi 1 scored
    by the fixed classifier (threshold 0.9)."""
    from difflab.data import batch_indices, load_dataset
    from difflab.metrics.classifier import confident_class_rate
    # One thread: on the shared 2-core machine two threads ran a step 4-5x slower (oversubscribed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = tiny_config(**{k: v for k, v in STYLEGAN2_MNIST.items() if k not in ("model", "data")})
    dataset = load_dataset("mnist", image_size=32, channels="1", root=shared_data / "mnist")
    trainer = StyleGAN2Trainer(config, 1, "cpu")
    trainer.prepare(lambda *objects: objects, dataset.images[:config.batch_size])
    start = time.perf_counter()
    for step in range(config.steps):
        indices = batch_indices(step, config.batch_size, len(dataset.images), config.seed)
        trainer.train_step(dataset.images[indices].float() / 127.5 - 1, step_context(step, config.seed))
    seconds = time.perf_counter() - start
    images = trainer.preview(256, seed=1)
    torch.set_num_threads(threads)
    score = confident_class_rate(load_featnet(shared_eval), (images + 1) / 2)
    print(f"StyleGAN2 MNIST recipe: {config.steps} steps in {seconds:.0f} s; confident {score.rate:.1%}, "
          f"classes {score.classes_covered}, counts {score.class_counts}")
    assert score.rate >= MNIST_GAN_MIN_RATE, score
    assert score.classes_covered >= MNIST_GAN_MIN_CLASSES, score


def test_ada_resampling_matches_grid_sample_and_has_a_second_derivative():
    """R1 differentiates D's gradient through the augmentation. CUDA's grid_sampler_2d_backward has
    no derivative (the first H200 run failed there), so ADA resamples with plain gathers: the same
    values as F.grid_sample (bilinear, reflection padding), and twice differentiable."""
    import torch.nn.functional as F
    from difflab.families.stylegan2.augment import bilinear_sample_reflect

    torch.manual_seed(0)
    for shape in [(3, 3, 16, 16), (2, 1, 8, 12)]:
        x = torch.randn(*shape, dtype=torch.float64)
        theta = torch.randn(shape[0], 2, 3, dtype=torch.float64) * 0.7
        grid = F.affine_grid(theta, list(shape), align_corners=False) * 1.8  # well outside: reflections
        expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        assert torch.allclose(bilinear_sample_reflect(x, grid), expected, atol=1e-12)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    grid = F.affine_grid(torch.randn(2, 2, 3, dtype=torch.float64) * 0.5, [2, 3, 8, 8], align_corners=False)
    (gradient,) = torch.autograd.grad(bilinear_sample_reflect(x, grid).pow(3).sum(), x, create_graph=True)
    assert torch.autograd.gradcheck(lambda inp: bilinear_sample_reflect(inp, grid), (x,))
    gradient.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_fp16_is_refused_naming_the_option():
    with pytest.raises(ConfigError, match="mixed_precision fp16 is not available for model stylegan2"):
        check_stylegan2_options(tiny_config(mixed_precision="fp16"))


def test_compiled_main_passes_train_as_the_eager_ones(monkeypatch):
    """--compile on: G's and D's main passes go through torch.compile (traced by Dynamo and AOT
    autograd; the aot_eager backend stands in for Inductor's code generation, which needs minutes
    on this CPU), the regularisers stay eager, and three steps give the eager step's results."""
    config = tiny_config(compile="on", r1_interval=2, augment="ada", ada_interval=1, ada_kimg=1)
    eager = make_trainer(tiny_config(compile="off", r1_interval=2, augment="ada", ada_interval=1, ada_kimg=1))
    real_compile = torch.compile
    calls = []

    def traced(model, **kwargs):
        calls.append(type(model).__name__)
        return real_compile(model, backend="aot_eager", **{k: v for k, v in kwargs.items() if k != "mode"})

    monkeypatch.setattr(torch, "compile", traced)
    compiled = StyleGAN2Trainer(config, 3, "cpu")
    assert compiled.prepare(lambda *objects: objects, data_batch(0), compile=True) == "G's and D's main passes"
    assert calls == [type(compiled.G).__name__, type(compiled.D).__name__]
    assert type(compiled.G_main).__name__ == "OptimizedModule" and compiled.G_reg is compiled.G
    eager_logs, compiled_logs = run_steps(eager, 0, 3), run_steps(compiled, 0, 3)
    for a, b in zip(eager_logs, compiled_logs):
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    for (name, p), q in zip(eager.G.named_parameters(), compiled.G.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_under_compile_auto_the_gan_stays_eager_and_says_so():
    # the core's --compile auto decision (compile) is declined: prepare returns None, so the training
    # log does not claim "compiled the network" (an H200 run printed "compiled ... in 0.0 s")
    trainer = StyleGAN2Trainer(tiny_config(compile="auto"), 3, "cpu")
    assert trainer.prepare(lambda *objects: objects, data_batch(0), compile=True) is None
    assert trainer.G_main is trainer.G and trainer.D_main is trainer.D
