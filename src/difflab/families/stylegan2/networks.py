"""StyleGAN2's generator and discriminator in plain PyTorch.

After Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (config F:
skip-connection generator, residual discriminator), as NVlabs stylegan2-ada-pytorch builds them:
- equalised learning rate: weights are stored N(0, 1) (divided by the layer's lr multiplier) and
  scaled at run time by lr_mul / sqrt(fan_in), biases by lr_mul, so Adam's per-parameter steps are
  equally large for every layer;
- a mapping network z -> w (z normalised to unit second moment, lr multiplier 0.01) that tracks
  the mean w (beta 0.995) for the truncation trick;
- modulated and demodulated 3x3 convolutions, per-layer noise inputs with learned per-channel
  strengths (initially 0), a learned constant 4x4 input, and an RGB output per resolution that is
  upsampled and summed;
- a residual discriminator ending in a minibatch standard deviation layer.
Leaky ReLU(0.2) activations are multiplied by sqrt(2) so that they preserve the second moment (He).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.families.stylegan2.ops import blur_before_strided_conv, setup_filter, upsample2d

LRELU_GAIN = math.sqrt(2.0)
RESIDUAL_GAIN = math.sqrt(0.5)  # the residual sum of two unit-variance branches stays unit-variance


def activate(x: Tensor, activation: str, gain: float = 1.0) -> Tensor:
    if activation == "lrelu":
        return F.leaky_relu(x, 0.2) * (LRELU_GAIN * gain)
    return x * gain if gain != 1.0 else x


def normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def channels_per_resolution(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """Feature maps at each resolution 4, 8, ..., `resolution`: min(channel_base // r, channel_max)."""
    sizes = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
    return {r: max(1, min(channel_base // r, channel_max)) for r in sizes}


# ---- equalised-learning-rate layers --------------------------------------------------------------

class EqualLinear(nn.Module):
    """A fully connected layer with equalised learning rate."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, lr_mul: float = 1.0,
                 bias_init: float = 0.0, activation: str = "linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def effective_weight(self) -> Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.bias_gain if self.bias is not None else None
        return activate(F.linear(x, self.effective_weight(), bias), self.activation)


class EqualConv2d(nn.Module):
    """A convolution with equalised learning rate, optionally downsampling 2x (blur, then stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.activation, self.down, self.gain, self.kernel_size = activation, down, gain, kernel_size
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def effective_weight(self) -> Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: Tensor) -> Tensor:
        weight = self.effective_weight()
        if self.down > 1:
            x = blur_before_strided_conv(x, self.resample_filter, self.kernel_size, self.down)
            x = F.conv2d(x, weight.to(x.dtype), stride=self.down)
        else:
            x = F.conv2d(x, weight.to(x.dtype), padding=self.kernel_size // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return activate(x, self.activation, self.gain)


# ---- modulated convolution -----------------------------------------------------------------------

def demodulation_coefficients(weight: Tensor, styles: Tensor, eps: float = 1e-8) -> Tensor:
    """1 / sqrt(sum_{i,k} (w_oik s_i)^2) per sample and output channel, (N, out), without forming
    the per-sample weights: sum_i s_i^2 * sum_k w_oik^2 is a matrix product."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).t() + eps).rsqrt()


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, up: int = 1,
                     resample_filter: Tensor | None = None) -> Tensor:
    """StyleGAN2's modulated convolution: scale input channels by the styles, convolve, and (with
    `demodulate`) rescale each output channel so that unit-variance inputs give unit-variance
    outputs. Written as scale-conv-scale (the reference's non-fused training path), which equals
    convolving with per-sample weights w_oik * s_i * d_o but runs as one ordinary convolution.
    `weight` is the effective (gain-scaled) weight; `up` = 2 upsamples first (zeros + FIR filter;
    the reference filters after a transposed convolution, which is the same linear map away from
    the borders)."""
    styles = styles.float()
    x = x * styles.to(x.dtype)[:, :, None, None]
    if up > 1:
        x = upsample2d(x, resample_filter, up)
    x = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    if demodulate:
        x = x * demodulation_coefficients(weight.float(), styles).to(x.dtype)[:, :, None, None]
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution, noise input with learned per-channel strength, bias, lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: plain convolution
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.up, self.resolution = up, resolution
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None) -> Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, up=self.up,
                             resample_filter=self.resample_filter)
        if noise is not None:
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)[None, :, None, None]
        return activate(x + self.bias.to(x.dtype)[None, :, None, None], "lrelu")


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation (as the reference)."""

    def __init__(self, in_channels: int, image_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(image_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(image_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), demodulate=False)
        return x + self.bias.to(x.dtype)[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (constant or 2x-upsampling conv) + conv + toRGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, image_channels: int):
        super().__init__()
        self.resolution = resolution
        self.is_first = resolution == 4
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, image_channels, w_dim)
        self.num_conv = 1 if self.is_first else 2
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: Tensor | None, image: Tensor | None, ws: Tensor, noise: list[Tensor | None]) -> tuple[Tensor, Tensor]:
        """`ws` holds num_conv + 1 latents: one per convolution, and the toRGB shares the next
        block's first (the reference's indexing)."""
        if self.is_first:
            x = self.const[None].to(ws.dtype).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise[0])
        else:
            x = self.conv0(x, ws[:, 0], noise[0])
            x = self.conv1(x, ws[:, 1], noise[1])
        y = self.torgb(x, ws[:, self.num_conv])
        image = y if image is None else upsample2d(image, self.resample_filter).to(y.dtype) + y
        return x, image


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, resolution: int, image_channels: int, channel_base: int, channel_max: int):
        super().__init__()
        channels = channels_per_resolution(resolution, channel_base, channel_max)
        self.resolutions = sorted(channels)
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels[max(r // 2, 4)], channels[r], w_dim, r, image_channels) for r in self.resolutions)
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def noise_resolutions(self) -> list[int]:
        """The spatial size of each convolution's noise input, in the order forward() takes them."""
        return [block.resolution for block in self.blocks for _ in range(block.num_conv)]

    def forward(self, ws: Tensor, noise: list[Tensor | None]) -> Tensor:
        x = image = None
        w_index = noise_index = 0
        for block in self.blocks:
            block_ws = ws[:, w_index:w_index + block.num_conv + 1]
            x, image = block(x, image, block_ws, noise[noise_index:noise_index + block.num_conv])
            w_index += block.num_conv
            noise_index += block.num_conv
        return image


class MappingNetwork(nn.Module):
    """z -> w: normalise z, then `layers` fully connected lrelu layers at lr multiplier 0.01."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, layers: int, lr_mul: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        features = [z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu")
                                    for a, b in zip(features[:-1], features[1:]))
        self.num_ws, self.w_avg_beta = num_ws, w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, psi: float = 1.0, update_w_avg: bool = False) -> Tensor:
        x = normalize_2nd_moment(z.float())
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:  # the running mean of w: the centre that truncation pulls towards
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None, :].expand(-1, self.num_ws, -1)
        if psi != 1.0:
            ws = self.w_avg.to(ws.dtype).lerp(ws, psi)
        return ws


class Generator(nn.Module):
    """StyleGAN2's generator G(z, noise) -> images in about [-1, 1], (N, C, R, R)."""

    def __init__(self, z_dim: int, w_dim: int, resolution: int, image_channels: int, mapping_layers: int = 2,
                 channel_base: int = 4096, channel_max: int = 512):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution, self.image_channels = z_dim, w_dim, resolution, image_channels
        self.synthesis = SynthesisNetwork(w_dim, resolution, image_channels, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers)

    def sample_noise(self, batch: int, generator: torch.Generator, device: torch.device) -> list[Tensor]:
        """Per-layer noise inputs drawn from `generator` (never the global RNG: exact resume)."""
        return [draw_normal((batch, 1, r, r), generator, device) for r in self.synthesis.noise_resolutions()]

    def mix_styles(self, ws: Tensor, ws_mix: Tensor, cutoff: Tensor) -> Tensor:
        """Style mixing: layers from `cutoff` on take their styles from the second latent."""
        layer = torch.arange(self.num_ws, device=ws.device)
        return torch.where((layer >= cutoff)[None, :, None], ws_mix, ws)

    def forward(self, z: Tensor, noise: list[Tensor | None], z_mix: Tensor | None = None,
                mix_cutoff: Tensor | None = None, psi: float = 1.0, update_w_avg: bool = False,
                return_ws: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """`return_ws` also returns the per-layer latents (for path-length regularisation)."""
        ws = self.mapping(z, psi=psi, update_w_avg=update_w_avg)
        if z_mix is not None:
            ws = self.mix_styles(ws, self.mapping(z_mix, psi=psi), mix_cutoff)
        images = self.synthesis(ws, noise)
        return (images, ws) if return_ws else images


# ---- discriminator -------------------------------------------------------------------------------

class MinibatchStd(nn.Module):
    """Appends the standard deviation of features across groups of samples (averaged over
    features and pixels) as extra channels, so D can see a lack of variety (mode collapse).
    Sample n is grouped with n + k * (N / G), as in the reference."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def group_for(self, batch: int) -> int:
        return max(g for g in range(1, min(self.group_size, batch) + 1) if batch % g == 0)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g, f = self.group_for(n), self.num_channels
        y = x.float().reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # (N / G, F)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second downsampling 2x) plus a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=2, gain=RESIDUAL_GAIN)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=2, gain=RESIDUAL_GAIN)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


class Discriminator(nn.Module):
    """D(images) -> one logit per image, (N,)."""

    def __init__(self, resolution: int, image_channels: int, channel_base: int = 4096, channel_max: int = 512,
                 mbstd_group: int = 4, mbstd_channels: int = 1):
        super().__init__()
        channels = channels_per_resolution(resolution, channel_base, channel_max)
        self.fromrgb = EqualConv2d(image_channels, channels[resolution], 1, activation="lrelu")
        self.blocks = nn.ModuleList(DiscriminatorBlock(channels[r], channels[r // 2])
                                    for r in sorted(channels, reverse=True) if r > 4)
        c4 = channels[4]
        self.mbstd = MinibatchStd(mbstd_group, mbstd_channels)
        self.conv = EqualConv2d(c4 + mbstd_channels, c4, 3, activation="lrelu")
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualLinear(c4, 1)

    def forward(self, image: Tensor) -> Tensor:
        x = self.fromrgb(image)
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))[:, 0]


# ---- randomness ------------------------------------------------------------------------------------

def draw_normal(shape, generator: torch.Generator, device: torch.device) -> Tensor:
    """N(0, 1) numbers from `generator` (on its own device), moved to `device`."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def draw_uniform(shape, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def draw_integers(low: int, high: int, shape, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(low, high, shape, generator=generator, device=generator.device).to(device)


def build_generator(options, image_channels: int) -> Generator:
    return Generator(options.z_dim, options.w_dim, options.image_size, image_channels, options.mapping_layers,
                     options.channel_base, options.channel_max)


def build_discriminator(options, image_channels: int) -> Discriminator:
    return Discriminator(options.image_size, image_channels, options.channel_base, options.channel_max,
                         options.mbstd_group)
