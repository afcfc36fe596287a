"""The DDPM / improved-diffusion U-Net that predicts noise (or x0, v) from a noisy image and t.

Layout for dim_mults (1, 2, 4) at 64x64 (widths c, 2c, 4c; R = num_res_blocks):

    stem 3x3 conv
    encoder  64x64: R ResBlocks -> down,  32x32: R ResBlocks -> down,  16x16: R ResBlocks
    middle   ResBlock, SelfAttention, ResBlock
    decoder  16x16: R+1 ResBlocks -> up,  32x32: R+1 ResBlocks -> up,  64x64: R+1 ResBlocks
    head     GroupNorm, SiLU, 3x3 conv (zero-initialised)

Every encoder output (stem, each block, each downsample) is concatenated onto the input of
one decoder block, hence R+1 decoder blocks per level. Self-attention follows each block
whose feature-map size is in `attn_resolutions`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.network.config import UNetConfig
from difflab.network.layers import (
    Downsample,
    ResBlock,
    SelfAttention,
    TimeEmbedding,
    Upsample,
    group_norm,
    zero_init,
)


class ResAttnBlock(nn.Module):
    """A ResBlock, optionally followed by self-attention."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, attention: bool):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, config.time_embed_dim, config.dropout)
        self.attn = SelfAttention(out_channels, config.attn_head_channels) if attention else None

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        x = self.res(x, embedding)
        return self.attn(x) if self.attn is not None else x


class EncoderLevel(nn.Module):
    """Blocks at one resolution, then (except at the lowest level) a downsample.
    Pushes every output onto `skips` for the decoder."""

    def __init__(
        self, in_channels: int, channels: int, config: UNetConfig, attention: bool, downsample: bool
    ):
        super().__init__()
        widths = [in_channels] + [channels] * config.num_res_blocks
        self.blocks = nn.ModuleList(
            ResAttnBlock(c_in, c_out, config, attention) for c_in, c_out in zip(widths, widths[1:])
        )
        self.downsample = Downsample(channels) if downsample else None
        self.channels = channels

    def skip_channels(self) -> list[int]:
        """Widths of the tensors this level pushes onto the skip stack, in push order."""
        count = len(self.blocks) + (self.downsample is not None)
        return [self.channels] * count

    def forward(self, h: Tensor, embedding: Tensor, skips: list[Tensor]) -> Tensor:
        for block in self.blocks:
            h = block(h, embedding)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)
            skips.append(h)
        return h


class DecoderLevel(nn.Module):
    """Blocks at one resolution, each fed the previous output concatenated with a skip
    popped from the encoder's stack, then (except at the top level) an upsample."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        skip_channels: list[int],
        config: UNetConfig,
        attention: bool,
        upsample: bool,
    ):
        super().__init__()
        inputs = [in_channels] + [channels] * (len(skip_channels) - 1)
        self.blocks = nn.ModuleList(
            ResAttnBlock(c_in + c_skip, channels, config, attention)
            for c_in, c_skip in zip(inputs, skip_channels)
        )
        self.upsample = Upsample(channels) if upsample else None

    def forward(self, h: Tensor, embedding: Tensor, skips: list[Tensor]) -> Tensor:
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), embedding)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


class MiddleBlock(nn.Module):
    """ResBlock, self-attention, ResBlock at the lowest resolution."""

    def __init__(self, channels: int, config: UNetConfig):
        super().__init__()
        self.res1 = ResBlock(channels, channels, config.time_embed_dim, config.dropout)
        self.attn = SelfAttention(channels, config.attn_head_channels)
        self.res2 = ResBlock(channels, channels, config.time_embed_dim, config.dropout)

    def forward(self, h: Tensor, embedding: Tensor) -> Tensor:
        return self.res2(self.attn(self.res1(h, embedding)), embedding)


class UNet(nn.Module):
    """Noise-prediction U-Net: `forward(x, t)` returns a tensor shaped like `x`.

    `t` holds one timestep per image, shape (B,), integer or float, in DDPM step units
    [0, 1000) (see `SinusoidalTimestepEmbedding`). The output layer is zero-initialised,
    so a fresh model outputs exactly zero.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        widths = config.level_channels
        resolutions = config.level_resolutions
        last = config.num_levels - 1

        self.time_embed = TimeEmbedding(config.base_channels, config.time_embed_dim)
        self.stem = nn.Conv2d(config.image_channels, widths[0], 3, padding=1)

        self.encoder = nn.ModuleList()
        skip_channels = [widths[0]]  # the stem's output is the first skip
        in_channels = widths[0]
        for level, (channels, size) in enumerate(zip(widths, resolutions)):
            attention = size in config.attn_resolutions
            encoder_level = EncoderLevel(in_channels, channels, config, attention, level < last)
            self.encoder.append(encoder_level)
            skip_channels += encoder_level.skip_channels()
            in_channels = channels

        self.middle = MiddleBlock(in_channels, config)

        self.decoder = nn.ModuleList()
        for level in reversed(range(config.num_levels)):
            level_skips = [skip_channels.pop() for _ in range(config.num_res_blocks + 1)]
            attention = resolutions[level] in config.attn_resolutions
            self.decoder.append(
                DecoderLevel(in_channels, widths[level], level_skips, config, attention, level > 0)
            )
            in_channels = widths[level]
        assert not skip_channels, "every encoder output must feed exactly one decoder block"

        self.head_norm = group_norm(in_channels)
        self.head_conv = zero_init(nn.Conv2d(in_channels, config.image_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if t.ndim == 0:  # one timestep for the whole batch
            t = t.expand(x.shape[0])
        embedding = self.time_embed(t)
        h = self.stem(x)
        skips = [h]
        for level in self.encoder:
            h = level(h, embedding, skips)
        h = self.middle(h, embedding)
        for level in self.decoder:
            h = level(h, embedding, skips)
        return self.head_conv(F.silu(self.head_norm(h)))

    def compile_regions(self) -> list[nn.Module]:
        """The repeated blocks that `--compile-scope blocks` compiles one by one (PyTorch's regional
        compilation): every encoder and decoder block (a ResBlock, with its attention where the
        level attends) and the middle block. Blocks of equal widths and map size share a graph."""
        levels = [*self.encoder, *self.decoder]
        return [block for level in levels for block in level.blocks] + [self.middle]

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())
