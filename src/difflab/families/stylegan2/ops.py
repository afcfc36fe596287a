"""FIR filtering and 2x up/down-sampling in plain PyTorch (no custom CUDA ops).

StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") resamples
with the separable [1, 3, 3, 1] binomial filter: upsampling inserts zeros and low-passes (gain 4,
so a constant image keeps its value), downsampling low-passes then keeps every second pixel.
`upfirdn2d` is the one primitive, an equivalent of the reference's upfirdn2d op built from
F.pad and a depthwise F.conv2d, so it runs on any device and under torch.compile."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

BINOMIAL_TAPS = (1.0, 3.0, 3.0, 1.0)


def setup_filter(taps=BINOMIAL_TAPS) -> Tensor:
    """The 2-D filter (outer product of the 1-D taps), normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: Tensor, f: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
              gain: float = 1.0) -> Tensor:
    """Upsample by zero insertion, pad (negative = crop) by pad = (before, after) on both axes,
    convolve every channel with `f` (times `gain`), then keep every `down`-th pixel."""
    n, c, h, w = x.shape
    if up > 1:  # each pixel followed by up-1 zeros, along both axes
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    before, after = pad
    x = F.pad(x, [before, after, before, after])
    # conv2d correlates; flip so that this is a true convolution (the binomial filter is symmetric anyway)
    weight = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: Tensor, f: Tensor, factor: int = 2) -> Tensor:
    """2x (factor) upsampling: output is exactly factor times larger; gain factor^2 keeps the mean.
    Computed as a depthwise transposed convolution, which equals upfirdn2d(up=factor) (zero
    insertion, padding, FIR) for an even-length filter without multiplying by the inserted zeros
    (4x fewer operations; it made CPU training steps markedly faster)."""
    taps = f.shape[-1]
    pad = ((taps + factor - 1) // 2, (taps - factor) // 2)
    if taps % 2 or factor != 2:
        return upfirdn2d(x, f, up=factor, pad=pad, gain=factor ** 2)
    c = x.shape[1]
    weight = (f * factor ** 2).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv_transpose2d(x, weight, stride=factor, padding=taps - 1 - pad[0], groups=c)


def downsample2d(x: Tensor, f: Tensor, factor: int = 2) -> Tensor:
    """2x (factor) downsampling: low-pass with `f`, keep every factor-th pixel (a strided
    depthwise convolution: only the kept pixels are computed)."""
    taps = f.shape[-1]
    before, after = ((taps - factor + 1) // 2, (taps - factor) // 2)
    c = x.shape[1]
    x = F.pad(x, [before, after, before, after])
    weight = f.flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, stride=factor, groups=c)


def blur_before_strided_conv(x: Tensor, f: Tensor, kernel_size: int, factor: int = 2) -> Tensor:
    """The low-pass that precedes a stride-`factor` convolution of size `kernel_size` (no padding)
    so that the pair downsamples exactly by `factor` (as the reference's conv2d_resample)."""
    p = (f.shape[-1] - factor) + (kernel_size - 1)
    return upfirdn2d(x, f, pad=((p + 1) // 2, p // 2))
