"""Tests for difflab.network: shapes, option validation, conditioning, layouts, attention."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from difflab.errors import ConfigError
from difflab.network import PRESETS, UNet, UNetConfig, count_flops, parse_int_tuple, preset
from difflab.network.layers import SelfAttention, attend
from difflab.network.presets import PEER_PARAMETERS


def tiny_config(**overrides) -> UNetConfig:
    """A narrow, shallow U-Net that runs in milliseconds on CPU."""
    fields = dict(
        base_channels=16, dim_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
        attn_head_channels=8, image_size=16,
    )
    fields.update(overrides)
    return UNetConfig(**fields)


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> torch.nn.Module:
    """Add noise to every parameter so zero-initialised layers stop hiding the rest."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


def random_batch(config: UNetConfig, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    size = config.image_size
    x = torch.randn(batch, config.image_channels, size, size)
    t = torch.linspace(0, 999, batch)
    return x, t


# --- shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("image_channels", [1, 3])
@pytest.mark.parametrize(
    "image_size, dim_mults, attn_resolutions",
    [(28, (1, 2), (14,)), (32, (1, 2, 2), (8,)), (64, (1, 2, 4), (16,))],
)
def test_output_shape_matches_input(image_channels, image_size, dim_mults, attn_resolutions):
    config = tiny_config(
        image_channels=image_channels, image_size=image_size, dim_mults=dim_mults,
        attn_resolutions=attn_resolutions,
    )
    model = UNet(config)
    x, t = random_batch(config)
    assert model(x, t).shape == x.shape


def test_accepts_integer_and_scalar_timesteps():
    model = perturb_(UNet(tiny_config()))
    x, _ = random_batch(model.config)
    by_int = model(x, torch.tensor([250, 250]))
    by_scalar = model(x, torch.tensor(250.0))
    torch.testing.assert_close(by_int, by_scalar)


def test_fresh_model_outputs_zero():
    """The zero-initialised output conv makes an untrained model predict exactly 0."""
    model = UNet(tiny_config())
    x, t = random_batch(model.config)
    assert torch.count_nonzero(model(x, t)) == 0


# --- option parsing and validation ----------------------------------------------------------


def test_parse_int_tuple():
    assert parse_int_tuple("1,2,4", "dim_mults") == (1, 2, 4)
    assert parse_int_tuple(" 1, 2 ,8 ", "dim_mults") == (1, 2, 8)
    assert parse_int_tuple("16", "attn_resolutions") == (16,)
    assert parse_int_tuple("", "attn_resolutions") == ()


@pytest.mark.parametrize("text", ["1,x", "1,,x", "1,2,", "1.5", "a"])
def test_parse_int_tuple_rejects_junk(text):
    with pytest.raises(ConfigError, match="dim_mults"):
        parse_int_tuple(text, "dim_mults")


def test_image_size_not_divisible_names_option_and_fix():
    config = UNetConfig(image_size=60, dim_mults=(1, 2, 4, 8), attn_resolutions=())
    with pytest.raises(ConfigError, match="image_size 60") as error:
        config.validate()
    assert "8" in str(error.value) and "64" in str(error.value)


def test_bad_attention_resolution_lists_existing_sizes():
    config = UNetConfig(image_size=64, dim_mults=(1, 2, 4), attn_resolutions=(12,))
    with pytest.raises(ConfigError, match="attn_resolutions") as error:
        UNet(config)
    assert "64,32,16" in str(error.value)


@pytest.mark.parametrize(
    "overrides, option",
    [
        (dict(base_channels=0), "channels"),
        (dict(dim_mults=()), "dim_mults"),
        (dict(dim_mults=(1, 0)), "dim_mults"),
        (dict(num_res_blocks=0), "res_blocks"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(image_size=0), "image_size"),
        (dict(image_channels=2), "image channels"),
        (dict(base_channels=24, attn_head_channels=32), "attn_head_channels"),
    ],
)
def test_invalid_options_raise_config_error(overrides, option):
    with pytest.raises(ConfigError, match=option):
        tiny_config(**overrides).validate()


def test_unknown_preset_names_option():
    with pytest.raises(ConfigError, match="preset must be one of"):
        preset("no-such-preset")


# --- training signal --------------------------------------------------------------------------


def test_output_depends_on_timestep():
    model = perturb_(UNet(tiny_config()))
    x, _ = random_batch(model.config, batch=1)
    early = model(x, torch.tensor([10.0]))
    late = model(x, torch.tensor([900.0]))
    assert not torch.allclose(early, late, atol=1e-4)


def test_gradient_reaches_every_parameter():
    """After a few SGD steps move the zero-initialised layers, every parameter gets a finite,
    non-zero gradient: nothing is disconnected from the loss."""
    torch.manual_seed(0)
    model = UNet(tiny_config(dropout=0.1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t = random_batch(model.config, batch=4)
    target = torch.randn_like(x)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x, t), target).backward()
        optimizer.step()
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x, t), target).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_same_seed_same_initial_parameters():
    config = tiny_config()
    torch.manual_seed(123)
    first = UNet(config).state_dict()
    torch.manual_seed(123)
    second = UNet(config).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


# --- layouts and attention ----------------------------------------------------------------------


def test_channels_last_matches_contiguous():
    model = perturb_(UNet(tiny_config(attn_resolutions=(16, 8))))
    x, t = random_batch(model.config)
    expected = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    actual = model(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def reference_attention(block: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Multi-head attention written out: softmax(Q K^T / sqrt(d)) V per head."""
    batch, channels, height, width = x.shape
    heads = block.num_heads
    head_dim = channels // heads
    qkv = block.qkv(block.norm(x)).reshape(batch, 3 * channels, height * width)
    q, k, v = (part.reshape(batch, heads, head_dim, height * width) for part in qkv.chunk(3, dim=1))
    weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(head_dim), dim=-1)
    out = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(batch, channels, height, width)
    return x + block.proj(out)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("height, width", [(5, 3), (17, 16)])  # 15 tokens: the CPU matmul path; 272: SDPA
def test_attention_matches_handwritten_reference(channels_last, height, width):
    torch.manual_seed(0)
    block = perturb_(SelfAttention(16, head_channels=4), scale=0.3)
    assert block.num_heads == 4
    x = torch.randn(2, 16, height, width)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    block, x = block.to(memory_format=layout), x.contiguous(memory_format=layout)
    out = block(x)
    torch.testing.assert_close(out, reference_attention(block, x), rtol=1e-5, atol=1e-5)
    # The output keeps the input's layout: a channels_last result leaking into a contiguous network
    # made every later convolution copy its input (and its gradient) back.
    assert out.is_contiguous(memory_format=layout)


def test_cpu_attention_paths_agree():
    """attend() takes two matmuls for short sequences on the CPU and SDPA otherwise: the same function."""
    q, k, v = torch.randn(3, 2, 4, 40, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    torch.testing.assert_close(attend(q, k, v), F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


# --- presets and FLOPs ----------------------------------------------------------------------------


def test_presets_are_valid():
    for config in PRESETS.values():
        config.validate()


def test_preset_image_size_override_keeps_attention_levels():
    config = preset("mnist-28", image_size=56)
    assert config.image_size == 56
    assert config.attn_resolutions == (28, 14)
    assert preset("base-64", image_size=128, attn_resolutions=(32,)).attn_resolutions == (32,)


def test_peer_preset_parameter_count_close_to_peer():
    parameters = UNet(preset("ddpm-peer-64")).num_parameters()
    assert abs(parameters - PEER_PARAMETERS) / PEER_PARAMETERS < 0.10
    assert abs(PEER_PARAMETERS - 35.7e6) < 0.1e6


def test_count_flops_is_per_image_and_positive():
    model = UNet(tiny_config())
    single = count_flops(model, 16)
    assert single > 0
    assert count_flops(model, 16, batch=3) == single
    assert count_flops(model, 32) > 3 * single  # 4x the pixels, minus attention-free levels


# --- torch.compile ----------------------------------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("DIFFLAB_TEST_COMPILE") != "1",
    reason="torch.compile is slow on small CPUs; set DIFFLAB_TEST_COMPILE=1 to run",
)
def test_compiled_model_matches_eager():
    model = perturb_(UNet(tiny_config()))
    x, t = random_batch(model.config)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x, t), model(x, t), rtol=1e-4, atol=1e-4)
