"""Augmentation of the discriminator's inputs, real and fake alike.

- ADA, after Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data": a
  faithful subset of the reference's 'bgc' pipeline (xflip, 90-degree rotations, integer
  translation, isotropic scale, rotation, anisotropic scale, fractional translation; brightness,
  contrast, luma flip, hue rotation, saturation), each applied per sample with probability p. p
  is adapted from the overfitting heuristic r_t = E[sign(D(real))]. Geometric transforms are one
  affine warp per sample through grid_sample with reflection padding (the reference pads by
  reflection and resamples with a wavelet filter at 2x; bilinear here is cheaper and blurs a
  little more); colour transforms are one 4x4 matrix per sample, as in the reference.
- DiffAugment, after Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
  Training": its 'color,translation,cutout' policy, always on.
Every random number comes from the step's torch.Generator, so a resumed run augments identically.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.families.stylegan2.networks import draw_integers, draw_normal, draw_uniform

# Strengths of the reference's 'bgc' pipeline (augment.py defaults).
XINT_MAX = 0.125     # integer translation, fraction of the image size
SCALE_STD = 0.2      # log2 std of isotropic scaling
ROTATE_MAX = 1.0     # rotation range, fraction of pi
ANISO_STD = 0.2      # log2 std of anisotropic scaling
XFRAC_STD = 0.125    # std of fractional translation, fraction of the image size
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5   # log2
HUE_MAX = 1.0        # fraction of pi
SATURATION_STD = 1.0  # log2


# ---- ADA -----------------------------------------------------------------------------------------

def _gated(value: Tensor, identity: float, gate: Tensor) -> Tensor:
    """`value` where the per-sample gate is on, else the transform's identity parameter."""
    return torch.where(gate, value, torch.full_like(value, identity))


def _affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Per-sample 3x3 matrices [[a, b, tx], [c, d, ty], [0, 0, 1]]."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=1).reshape(-1, 3, 3)


def _rotation(theta: Tensor) -> Tensor:
    zero = torch.zeros_like(theta)
    return _affine(theta.cos(), -theta.sin(), theta.sin(), theta.cos(), zero, zero)


def _scale(sx: Tensor, sy: Tensor) -> Tensor:
    zero = torch.zeros_like(sx)
    return _affine(sx, zero, zero, sy, zero, zero)


def _translation(tx: Tensor, ty: Tensor) -> Tensor:
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return _affine(one, zero, zero, one, tx, ty)


def geometric_matrices(n: int, p: Tensor, size: int, generator: torch.Generator, device) -> Tensor:
    """Per-sample output -> input maps (N, 3, 3) in grid_sample's [-1, 1] coordinates. Every
    parameter distribution is symmetric, so drawing the inverse map directly draws the same
    distribution of transforms as the reference."""
    def gate(probability) -> Tensor:
        return draw_uniform([n], generator, device) < probability

    pixel = 2.0 / size  # one pixel in [-1, 1] coordinates
    m = torch.eye(3, device=device).repeat(n, 1, 1)
    # xflip
    flip = _gated(1 - 2 * draw_integers(0, 2, [n], generator, device).float(), 1.0, gate(p))
    m = m @ _scale(flip, torch.ones_like(flip))
    # 90-degree rotations: exact cosines and sines from a table, so pixels map onto pixels
    quarter = draw_integers(0, 4, [n], generator, device)
    quarter = torch.where(gate(p), quarter, torch.zeros_like(quarter))
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[quarter]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[quarter]
    m = m @ _affine(cos, -sin, sin, cos, torch.zeros_like(cos), torch.zeros_like(cos))
    # integer translation, whole pixels
    shift = (draw_uniform([n, 2], generator, device) * 2 - 1) * XINT_MAX
    shift = torch.round(shift * size) * pixel
    on = gate(p)
    m = m @ _translation(_gated(shift[:, 0], 0.0, on), _gated(shift[:, 1], 0.0, on))
    # isotropic scale
    s = _gated(2 ** (draw_normal([n], generator, device) * SCALE_STD), 1.0, gate(p))
    m = m @ _scale(s, s)
    # rotation before and after the anisotropic scale: each with 1 - sqrt(1 - p), so that
    # "some rotation" happens with probability p (the reference's p_rot)
    p_rot = 1 - torch.sqrt((1 - p).clamp(min=0))
    theta = _gated((draw_uniform([n], generator, device) * 2 - 1) * math.pi * ROTATE_MAX, 0.0, gate(p_rot))
    m = m @ _rotation(theta)
    a = _gated(2 ** (draw_normal([n], generator, device) * ANISO_STD), 1.0, gate(p))
    m = m @ _scale(a, 1 / a)
    theta = _gated((draw_uniform([n], generator, device) * 2 - 1) * math.pi * ROTATE_MAX, 0.0, gate(p_rot))
    m = m @ _rotation(theta)
    # fractional translation
    frac = draw_normal([n, 2], generator, device) * XFRAC_STD * 2  # image spans 2 units
    on = gate(p)
    m = m @ _translation(_gated(frac[:, 0], 0.0, on), _gated(frac[:, 1], 0.0, on))
    return m


def colour_matrices(n: int, p: Tensor, generator: torch.Generator, device) -> Tensor:
    """Per-sample 4x4 colour transforms acting on (r, g, b, 1)."""
    def gate() -> Tensor:
        return draw_uniform([n], generator, device) < p

    eye = torch.eye(4, device=device)
    luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)
    luma_outer = torch.outer(luma, luma)
    c = eye.repeat(n, 1, 1)
    # brightness: add b to every channel
    b = _gated(draw_normal([n], generator, device) * BRIGHTNESS_STD, 0.0, gate())
    shift = eye.repeat(n, 1, 1)
    shift[:, :3, 3] = b[:, None]
    c = shift @ c
    # contrast: scale every channel
    k = _gated(2 ** (draw_normal([n], generator, device) * CONTRAST_STD), 1.0, gate())
    scale = eye.repeat(n, 1, 1)
    scale[:, 0, 0] = scale[:, 1, 1] = scale[:, 2, 2] = k
    c = scale @ c
    # luma flip: mirror along the grey axis
    i = _gated(draw_integers(0, 2, [n], generator, device).float(), 0.0, gate())
    c = (eye - 2 * luma_outer * i[:, None, None]) @ c
    # hue rotation about the grey axis (Rodrigues' formula)
    theta = _gated((draw_uniform([n], generator, device) * 2 - 1) * math.pi * HUE_MAX, 0.0, gate())
    c = _rotation_about_grey(theta, luma) @ c
    # saturation: scale the part orthogonal to the grey axis
    s = _gated(2 ** (draw_normal([n], generator, device) * SATURATION_STD), 1.0, gate())
    c = (luma_outer + (eye - luma_outer) * s[:, None, None]) @ c
    return c


def _rotation_about_grey(theta: Tensor, axis: Tensor) -> Tensor:
    v = axis[:3]
    cross = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], device=theta.device)
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    r3 = cos * torch.eye(3, device=theta.device) + sin * cross + (1 - cos) * torch.outer(v, v)
    r = torch.eye(4, device=theta.device).repeat(len(theta), 1, 1)
    r[:, :3, :3] = r3
    return r


def _reflect(coordinate: Tensor, size: int) -> Tensor:
    """grid_sample's reflection padding for align_corners=False: reflect about -0.5 and size - 0.5,
    then clip to [0, size - 1]."""
    span = float(size)
    distance = (coordinate + 0.5).abs()
    flips = torch.floor(distance / span)
    extra = distance - flips * span
    reflected = torch.where(flips.remainder(2) == 0, extra, span - extra) - 0.5
    return reflected.clamp(0, size - 1)


def bilinear_sample_reflect(images: Tensor, grid: Tensor) -> Tensor:
    """F.grid_sample(images, grid, "bilinear", padding_mode="reflection", align_corners=False) in
    plain gather and arithmetic, so that it has a second derivative: R1 differentiates D's gradient
    through the augmentation, and aten's CUDA grid_sampler_2d_backward has no derivative (the
    reference carries its own grid_sample_gradfix for the same reason; the CPU happens to use a
    composite fallback). Written by hand because no installable library provides it here."""
    n, channels, h, w = images.shape
    x = _reflect(((grid[..., 0] + 1) * w - 1) / 2, w)  # (N, H, W) pixel coordinates
    y = _reflect(((grid[..., 1] + 1) * h - 1) / 2, h)
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = images.reshape(n, channels, h * w)

    def at(yi: Tensor, xi: Tensor) -> Tensor:
        index = (yi * w + xi).reshape(n, 1, -1).expand(n, channels, -1)
        return flat.gather(2, index).reshape(n, channels, *yi.shape[1:])

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def ada_augment(images: Tensor, p: Tensor, generator: torch.Generator) -> Tensor:
    """The 'bgc' pipeline at probability `p` (a 0-dim tensor, kept on the device: no host sync).
    Differentiable in `images`, so G's gradients pass through it (as ADA requires)."""
    n, channels, h, w = images.shape
    device, dtype = images.device, images.dtype
    p = p.to(device)
    m = geometric_matrices(n, p, w, generator, device)
    grid = F.affine_grid(m[:, :2, :].to(dtype), [n, channels, h, w], align_corners=False)
    x = bilinear_sample_reflect(images, grid)
    c = colour_matrices(n, p, generator, device).to(dtype)
    if channels == 3:
        x = (c[:, :3, :3] @ x.reshape(n, 3, h * w) + c[:, :3, 3:]).reshape(n, 3, h, w)
    elif channels == 1:  # the reference's grey-scale rule: average the colour rows
        c = c[:, :3, :].mean(dim=1, keepdim=True)
        x = x * c[:, :, :3].sum(dim=2, keepdim=True)[..., None] + c[:, :, 3:][..., None]
    return x


class AdaptiveAugment:
    """ADA's p and its controller. p lives on the device; the sign statistics of D's real logits
    accumulate there, and every `interval` steps p moves by
        sign(E[sign(D(real))] - target) * batch * interval / (kimg * 1000),
    clamped to [0, 1], so p can traverse [0, 1] in `kimg` thousand images."""

    def __init__(self, target: float, interval: int, kimg: float, batch_size: int, device):
        self.target, self.interval, self.kimg, self.batch_size = target, interval, kimg, batch_size
        self.p = torch.zeros([], device=device)
        self.sign_sum = torch.zeros([], device=device)
        self.sign_count = torch.zeros([], device=device)

    def accumulate(self, real_logits: Tensor) -> None:
        self.sign_sum += real_logits.detach().float().sign().sum()
        self.sign_count += real_logits.numel()

    def adjust(self) -> None:
        stats = torch.stack([self.sign_sum, self.sign_count])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)  # every process moves p the same way
        r_t = stats[0] / stats[1].clamp(min=1)
        step = self.batch_size * self.interval / (self.kimg * 1000)
        self.p.copy_((self.p + torch.sign(r_t - self.target) * step).clamp(0, 1))
        self.sign_sum.zero_()
        self.sign_count.zero_()

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return ada_augment(images, self.p, generator)

    def state(self) -> dict[str, Tensor]:
        return {"p": self.p, "sign_sum": self.sign_sum, "sign_count": self.sign_count}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        for name, value in self.state().items():
            value.copy_(tensors[name])


# ---- DiffAugment ---------------------------------------------------------------------------------

def diff_augment(images: Tensor, generator: torch.Generator, translation: float = 0.125,
                 cutout: float = 0.5) -> Tensor:
    """Zhao et al.'s 'color,translation,cutout' policy on images in [-1, 1]."""
    n, channels, h, w = images.shape
    device = images.device

    def uniform() -> Tensor:
        return draw_uniform([n, 1, 1, 1], generator, device).to(images.dtype)

    x = images + (uniform() - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (uniform() * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (uniform() + 0.5) + mean  # contrast
    x = _translate_integer(x, generator, translation)
    return _cutout(x, generator, cutout)


def _translate_integer(x: Tensor, generator: torch.Generator, fraction: float) -> Tensor:
    """Shift each image by whole pixels up to `fraction` of its size, filling with zeros."""
    n, channels, h, w = x.shape
    device = x.device
    sy = draw_integers(-int(h * fraction + 0.5), int(h * fraction + 0.5) + 1, [n, 1, 1], generator, device)
    sx = draw_integers(-int(w * fraction + 0.5), int(w * fraction + 0.5) + 1, [n, 1, 1], generator, device)
    ys = torch.arange(h, device=device)[None, :, None] + sy
    xs = torch.arange(w, device=device)[None, None, :] + sx
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).reshape(n, 1, h * w).expand(-1, channels, -1)
    shifted = x.reshape(n, channels, h * w).gather(2, index).reshape(n, channels, h, w)
    return shifted * inside[:, None].to(x.dtype)


def _cutout(x: Tensor, generator: torch.Generator, fraction: float) -> Tensor:
    """Zero one square of `fraction` of the image size per image, at a random centre."""
    n, _, h, w = x.shape
    device = x.device
    ch, cw = int(h * fraction + 0.5), int(w * fraction + 0.5)
    cy = draw_integers(0, h + (1 - ch % 2), [n, 1, 1], generator, device)
    cx = draw_integers(0, w + (1 - cw % 2), [n, 1, 1], generator, device)
    ys = torch.arange(h, device=device)[None, :, None]
    xs = torch.arange(w, device=device)[None, None, :]
    cut = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)
    return x * (~cut)[:, None].to(x.dtype)


def build_augment(kind: str, options, batch_size: int, device):
    """The augmentation of D's inputs for `--augment`: callable(images, generator) or None."""
    if kind == "ada":
        return AdaptiveAugment(options.ada_target, options.ada_interval, options.ada_kimg, batch_size, device)
    if kind == "diffaug":
        return diff_augment
    return None
