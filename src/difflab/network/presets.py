"""Named U-Net configurations, selectable by name (`difflab train --preset NAME`, or `preset(NAME)`).

The size presets (`28`, `32`, `64`, `96`, `128`, `256`) are the size rule's network at that size
(difflab.network.config: levels down to about 16 px, attention at a quarter of the size, at most
32 px), 64 channels wide from 64 px up and 32 below, where small images need less: `--preset 64` is
the default network. The named ones reproduce published or compared models.

Parameter counts and forward FLOPs are per 1 image at the preset's own size, measured
with `UNet.num_parameters()` and `count_flops` (FLOPs = 2 x multiply-adds); tests check the counts.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from difflab.config import format_int_tuple
from difflab.errors import OPTION, ConfigError
from difflab.network.config import UNetConfig

PEER_PARAMETERS = 35_711_491
"""lucidrains' denoising-diffusion-pytorch 2.3.4 `Unet(dim=64, dim_mults=(1, 2, 4, 8))`:
35.71M parameters, 14.59 GFLOPs per 64x64 forward pass."""

SIZE_PRESETS: dict[str, UNetConfig] = {
    # 28/14/7 px, attention at 7: 4.12M parameters, 0.83 GFLOPs (MNIST's size).
    "28": UNetConfig.for_image_size(28, base_channels=32),
    # 32/16/8 px, attention at 8: 4.12M parameters, 1.08 GFLOPs (CIFAR-10's size).
    "32": UNetConfig.for_image_size(32, base_channels=32),
    # 64/32/16 px, attention at 16: 16.43M parameters, 17.46 GFLOPs (the defaults at 64 px).
    "64": UNetConfig.for_image_size(64, base_channels=64),
    # 96/48/24/12 px, widths 1,1,2,4, attention at 24: 16.19M parameters, 19.80 GFLOPs.
    "96": UNetConfig.for_image_size(96, base_channels=64),
    # 128/64/32/16 px, widths 1,1,2,4, attention at 32: 16.19M parameters, 35.23 GFLOPs.
    "128": UNetConfig.for_image_size(128, base_channels=64),
    # 256/128/64/32/16 px, widths 1,1,1,2,4, attention at 32: 16.93M parameters, 107.65 GFLOPs.
    "256": UNetConfig.for_image_size(256, base_channels=64),
}

PRESETS: dict[str, UNetConfig] = {
    **SIZE_PRESETS,
    # 28x28 grayscale (MNIST-like): 1.83M parameters, 0.64 GFLOPs.
    "mnist-28": UNetConfig(
        image_channels=1, base_channels=32, dim_mults=(1, 2, 2), num_res_blocks=2,
        attn_resolutions=(7, 14), image_size=28,
    ),
    # The DDPM paper's CIFAR-10 model (Ho et al. 2020; 35.7M parameters there): 38.31M here,
    # the extra from the scale-shift time conditioning; 12.45 GFLOPs at 32x32.
    "ddpm-cifar10-32": UNetConfig(
        base_channels=128, dim_mults=(1, 2, 2, 2), num_res_blocks=2,
        attn_resolutions=(16,), dropout=0.1, image_size=32,
    ),
    # A solid default for 64x64 colour images: 16.43M parameters, 17.46 GFLOPs (= "64").
    "base-64": UNetConfig(
        base_channels=64, dim_mults=(1, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
        image_size=64,
    ),
    # Matched to the peer, lucidrains' README `Unet(dim=64, dim_mults=(1, 2, 4, 8))` at
    # 64x64 (35.71M parameters, 14.59 GFLOPs), for speed comparisons at equal model size.
    # The peer's decoder has 2 blocks per level at widths 64/128/256/512 and an encoder of
    # 2 blocks at half those widths; here 1 encoder + 2 decoder blocks per level at
    # 64/128/256/448 (512 would give 40.7M). The peer attends at every level (linear
    # attention at 64/32/16, full at 8); full attention at 64x64 would cost ~4 GFLOPs
    # per layer, so here it is full attention at 16 and 8 only.
    # Result: 36.74M parameters (+2.9%), 15.30 GFLOPs (+4.9%).
    "ddpm-peer-64": UNetConfig(
        base_channels=64, dim_mults=(1, 2, 4, 7), num_res_blocks=1, attn_resolutions=(16, 8),
        image_size=64,
    ),
}

PRESET_PARAMETERS: dict[str, int] = {
    "28": 4_118_051, "32": 4_118_051, "64": 16_432_195, "96": 16_189_955, "128": 16_189_955, "256": 16_934_595,
    "mnist-28": 1_826_721, "ddpm-cifar10-32": 38_307_203, "base-64": 16_432_195, "ddpm-peer-64": 36_742_787,
}
"""Each preset's parameter count at its own image channels (tests/test_presets.py checks them)."""

PRESET_NOTES: dict[str, str] = {
    "28": "MNIST's size", "32": "CIFAR-10's size", "64": "the defaults at 64 px", "mnist-28": "lighter, for MNIST",
    "ddpm-cifar10-32": "DDPM CIFAR-10", "base-64": "= 64", "ddpm-peer-64": "lucidrains-sized",
}


def preset(name: str, **overrides: Any) -> UNetConfig:
    """The named preset, with any fields replaced by `overrides` (e.g. image_size=128).

    Overriding only `image_size` keeps attention at the same U-Net levels: "mnist-28"
    attends at 7 and 14 pixels; at image_size=56 that becomes 14 and 28.
    """
    if name not in PRESETS:
        raise ConfigError(f"{OPTION} must be one of {', '.join(PRESETS)}; got {name!r}", option="preset")
    base = PRESETS[name]
    if "image_size" in overrides and "attn_resolutions" not in overrides:
        overrides["attn_resolutions"] = _attention_at_same_levels(base, overrides["image_size"])
    config = replace(base, **overrides)
    config.validate()
    return config


def preset_options(name: str, image_size: int | None = None) -> dict[str, Any]:
    """The run options (`difflab train` flags) that the preset sets: its image size and U-Net.
    With `image_size`, the preset at that size (attention kept at the same levels, as preset())."""
    config = preset(name, **({"image_size": image_size} if image_size is not None else {}))
    return config.to_options()


def describe_preset(name: str) -> str:
    """One line for `--help`: size, levels, widths, attention, parameters."""
    config = PRESETS[name]
    levels = "/".join(str(size) for size in config.level_resolutions)
    extra = f", {config.num_res_blocks} res block{'s' if config.num_res_blocks > 1 else ''}" \
        if config.num_res_blocks != 2 else ""
    extra += f", dropout {config.dropout:g}" if config.dropout else ""
    note = f"; {PRESET_NOTES[name]}" if name in PRESET_NOTES else ""
    return (f"{config.image_size} px: {config.base_channels} ch x {format_int_tuple(config.dim_mults)} ({levels} px), "
            f"attention {format_int_tuple(config.attn_resolutions) or 'none'}{extra}; "
            f"{PRESET_PARAMETERS[name] / 1e6:.2f}M params{note}")


def _attention_at_same_levels(config: UNetConfig, image_size: int) -> tuple[int, ...]:
    resized = replace(config, image_size=image_size).level_resolutions
    return tuple(
        new_size
        for old_size, new_size in zip(config.level_resolutions, resized)
        if old_size in config.attn_resolutions
    )
