"""A trained StyleGAN2 generator as an ImageGenerator, for `sample`, `eval`, `compare` and `fuse`.

Truncation (Karras et al. 2019/2020): w' = w_avg + psi * (w - w_avg), psi = 1 is no truncation.
`difflab fuse` on a GAN run interpolates in W space between two seeds' latents (interpolate_w):
a GAN has no encoder, so it cannot invert given images as a diffusion model's DDIM inversion can.
"""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from difflab.errors import OPTION, ConfigError, DataError
from difflab.families.stylegan2.networks import Generator, build_generator, draw_normal
from difflab.families.stylegan2.ops import setup_filter
from difflab.families.stylegan2.options import StyleGAN2Options
from difflab.training.checkpoint import check_state_dict, load_state_checked
from difflab.training.speed import resolve_mixed_precision

WEIGHT_GROUPS = {"ema": "G_ema", "model": "G"}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def options_from_config(config: dict[str, Any]) -> SimpleNamespace:
    """StyleGAN2Options' defaults overlaid with a checkpoint's saved configuration."""
    defaults = {f.name: f.default for f in dataclasses.fields(StyleGAN2Options)}
    return SimpleNamespace(**{**defaults, **config})


def to_uint8(images: Tensor) -> Tensor:
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def batch_seed(seed: int, first: int) -> int:
    return seed * 1_000_003 + first


# Sampling options of the diffusion family, with the values that mean "not given": a GAN run refuses
# any other value, so `sample --steps 10` on a GAN run is an error, not silently ignored.
DIFFUSION_ONLY = {"sampler": None, "steps": None, "eta": 0.0, "spacing": "uniform", "clip": None}


def check_gan_sampling_options(options: dict[str, Any]) -> None:
    for name, unset in DIFFUSION_ONLY.items():
        if options.get(name, unset) != unset:
            raise ConfigError(f"{OPTION} applies to diffusion runs; a StyleGAN2 run makes each image in one "
                              "generator pass (its option is {option:truncation})", option=name)


class StyleGAN2Generator:
    family = "stylegan2"
    speed = None  # no sampling fast paths: one generator pass per image
    guidance = None

    def __init__(self, network: Generator, step: int, checkpoint: Path | None, config: Any, weights: str = "ema"):
        self.network = network.eval().requires_grad_(False)
        self.step, self.checkpoint, self.config, self.weights = step, checkpoint, config, weights

    # ---- the rest of the ImageGenerator interface (families/base.py) --------------------------------
    def accelerated(self, speed) -> "StyleGAN2Generator":
        return self

    def network_passes(self, count: int, batch_size: int, **_: Any) -> int:
        return -(-count // max(batch_size, 1))

    def warm_up(self, batch_size: int, precision: str) -> None:
        for _ in self.generate(batch_size, batch_size, seed=0, precision=precision):
            pass

    def study_settings(self, truncations: str = "1", **_: Any) -> list:
        """The rows of `difflab compare` for this model: one per --truncations psi."""
        from difflab.experiments.study import SamplerSpec
        try:
            values = [float(part) for part in str(truncations).split(",") if part.strip()]
        except ValueError:
            raise ConfigError(f"{OPTION} must be comma-separated numbers such as 1,0.75; got {truncations!r}",
                              option="truncations") from None
        for psi in values:
            check_truncation(psi, option="truncations")
        return [SamplerSpec("stylegan2", 1, options=(("truncation", psi),), name=f"StyleGAN2-psi{psi:g}")
                for psi in values]

    def interpolate_seeds(self, seed_a: int, seed_b: int, lams: Sequence[float], truncation: float = 1.0) -> Tensor:
        """`difflab fuse RUN --seeds A,B`: W-space interpolation between two seeds' faces."""
        return self.interpolate_w(self.latent_for_seed(seed_a), self.latent_for_seed(seed_b), lams, truncation)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def image_shape(self) -> tuple[int, int, int]:
        return (self.network.image_channels, self.network.resolution, self.network.resolution)

    def _autocast(self, precision: str):
        resolved = resolve_mixed_precision(precision, self.device)
        if resolved in AUTOCAST_DTYPES:
            return torch.autocast(device_type=self.device.type, dtype=AUTOCAST_DTYPES[resolved])
        return nullcontext()

    @torch.no_grad()
    def generate(self, count: int, batch_size: int = 250, seed: int = 0, precision: str = "no",
                 truncation: float | None = 1.0, **diffusion_options: Any) -> Iterator[tuple[int, Tensor]]:
        """Yield (first index, uint8 (B, C, H, W) on the CPU); batch b's latents and noise come from
        torch.Generator(device).manual_seed(seed * 1_000_003 + first), so any batch is reproducible."""
        check_gan_sampling_options(diffusion_options)
        truncation = 1.0 if truncation is None else truncation
        check_truncation(truncation)
        for first in range(0, count, batch_size):
            n = min(batch_size, count - first)
            generator = torch.Generator(device=self.device).manual_seed(batch_seed(seed, first))
            z = draw_normal([n, self.network.z_dim], generator, self.device)
            noise = self.network.sample_noise(n, generator, self.device)
            with self._autocast(precision):
                images = self.network(z, noise, psi=truncation)
            yield first, to_uint8(images)

    def describe(self, truncation: float | None = 1.0, **diffusion_options: Any) -> str:
        check_gan_sampling_options(diffusion_options)
        truncation = 1.0 if truncation is None else truncation
        return f"StyleGAN2, psi {truncation:g}"

    def latent_for_seed(self, seed: int) -> Tensor:
        """The z of `seed`: (1, z_dim) drawn from torch.Generator(device).manual_seed(seed)."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return draw_normal([1, self.network.z_dim], generator, self.device)

    @torch.no_grad()
    def interpolate_w(self, z_a: Tensor, z_b: Tensor, lams: Sequence[float], truncation: float = 1.0,
                      noise_seed: int = 0) -> Tensor:
        """Images along the straight line in W between the latents z_a and z_b (each (1, z_dim) or
        (z_dim,)): w(lam) = (1 - lam) w_a + lam w_b, truncated by psi, with the same noise inputs
        for every lam so that only the style changes. uint8 (len(lams), C, H, W) on the CPU."""
        check_truncation(truncation)
        mapping = self.network.mapping
        ws_a = mapping(z_a.reshape(1, -1).to(self.device), psi=truncation)
        ws_b = mapping(z_b.reshape(1, -1).to(self.device), psi=truncation)
        lam = torch.as_tensor(list(lams), dtype=ws_a.dtype, device=self.device)[:, None, None]
        ws = ws_a.lerp(ws_b, lam)  # (L, num_ws, w_dim)
        generator = torch.Generator(device=self.device).manual_seed(noise_seed)
        noise = [n.expand(len(lam), -1, -1, -1) for n in self.network.sample_noise(1, generator, self.device)]
        return to_uint8(self.network.synthesis(ws, noise))


def check_truncation(truncation: float, option: str = "truncation") -> None:
    """ConfigError unless psi is in [0, 2]; `option` names the option it came from."""
    if not (0.0 <= float(truncation) <= 2.0):
        raise ConfigError(f"{OPTION} must be in [0, 2] (1 = none); got {truncation}", option=option)


def load_stylegan2_generator(checkpoint, device: torch.device | str = "cpu", weights: str = "ema") -> StyleGAN2Generator:
    """The generator of a difflab checkpoint (a Checkpoint, a file or a run folder): weights "ema"
    (group G_ema) or "model" (group G). No code from the file is executed (safetensors)."""
    if weights not in WEIGHT_GROUPS:
        raise ConfigError(f"{OPTION} must be one of {', '.join(WEIGHT_GROUPS)} for a StyleGAN2 run; got {weights!r}",
                          option="weights")
    group = WEIGHT_GROUPS[weights]
    if isinstance(checkpoint, (str, Path)):
        from difflab.training.checkpoint import load_checkpoint
        checkpoint = load_checkpoint(checkpoint, groups=(group,))
    tensors = checkpoint.tensors.get(group)
    if not tensors:
        raise DataError(f"{checkpoint.path or 'the checkpoint'} holds no {group!r} weights "
                        f"(groups present: {', '.join(sorted(checkpoint.tensors)) or 'none'})")
    options = options_from_config(checkpoint.config)
    channels = checkpoint.meta.get("image_channels") or tensors["synthesis.blocks.0.torgb.weight"].shape[0]
    with torch.device("meta"):  # no memory until the weights arrive
        network = build_generator(options, int(channels))
    source = str(checkpoint.path or "the checkpoint")
    check_state_dict(network, tensors, source)  # a DataError naming the mismatch, before allocating
    network = network.to_empty(device=torch.device(device))
    load_state_checked(network, tensors, source)  # also rejects NaN/inf weights of a diverged run
    _restore_filters(network)
    path = Path(checkpoint.path) if checkpoint.path else None
    return StyleGAN2Generator(network, checkpoint.step, path, options, weights)


def _restore_filters(network: torch.nn.Module) -> None:
    """Non-persistent buffers (the FIR filters) are not in checkpoints: refill them after to_empty."""
    for module in network.modules():
        if "resample_filter" in module._buffers:
            module._buffers["resample_filter"] = setup_filter().to(module._buffers["resample_filter"].device)
