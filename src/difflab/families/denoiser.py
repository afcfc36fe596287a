"""The one-step denoiser: the course report's "deep image prior" (DIP), defined precisely.

A small U-Net D (difflab's UNet, the diffusion family's network) trained to map a noisy image to
its clean one in one evaluation:

    training input   x = q_sample(x0, t, eps) = sqrt(a_t) x0 + sqrt(1 - a_t) eps, t ~ U{0, ..., T-1}
                     of the run's noise schedule (--beta-schedule, --timesteps), and with
                     probability --pure-noise-share x = eps (pure noise, the input of a first pass);
    target           x0;
    loss             mean squared error ||D(x) - x0||^2;
    conditioning     none: the network's time input is the constant 0, so D is *blind* to the noise
                     level (like DnCNN) and estimates it from the image.

Why blind: the report feeds "the noise image through the denoiser 1-3 times". A second pass gets
the first pass's output, whose noise level is not any t of the schedule, so a t-conditioned
network would have no right t to be given; a blind one is one fixed function, and K passes are
its K-fold composition.

A pass: x <- clamp(D(x), -1, 1). K passes from noise: x^(0) = eps ~ N(0, I), x^(k) = pass(x^(k-1));
K = 0 is the noise itself. Since D is trained for the MSE, D(eps) is close to E[x0 | eps] = the
dataset's mean image (eps carries no information about x0), and further passes pull towards it
(docs/concepts.md, section 10; benchmarks/warm_start_passes.py measures it).

Its generator makes images by K passes from pure noise (`difflab sample RUN --passes K`);
`difflab sample DIFFUSION_RUN --warm-start RUN` uses it as a prior (generation/warm_start.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from difflab.build import build_schedule, unet_config
from difflab.config import FRACTION, NON_NEGATIVE, POSITIVE, option, parse_int_tuple
from difflab.diffusion import make_beta_schedule
from difflab.diffusion.process import q_sample
from difflab.errors import OPTION, ConfigError, DataError
from difflab.families.base import Family, StepContext
from difflab.network import UNet
from difflab.training.checkpoint import load_network_state, network_state
from difflab.training.ema import EMA
from difflab.training.speed import compile_or_eager, optimizer_kernel, resolve_compile_scope


@dataclass
class DenoiserOptions:
    """The one-step denoiser's own options: its U-Net, the noise its inputs carry, its optimiser."""
    # Network (the diffusion family's U-Net options, with smaller defaults)
    channels: int = option(32, "U-Net base width (channels of the first level)", **POSITIVE)
    dim_mults: str = option("1,2,4", "width multiplier per U-Net level; levels - 1 downsamplings")
    res_blocks: int = option(1, "residual blocks per U-Net level", **POSITIVE)
    attn_resolutions: str = option("", "feature-map sizes that get self-attention ('' = none)")
    attn_head_channels: int = option(64, "channels per self-attention head", **POSITIVE)
    dropout: float = option(0.0, "dropout in the residual blocks", **FRACTION)
    # The noise of the training inputs
    timesteps: int = option(1000, "number of noise levels T of the training inputs' schedule", low=2)
    beta_schedule: str = option("cosine", "noise schedule of the training inputs x = q_sample(x0, t), t uniform",
                                ("linear", "cosine", "sigmoid", "keras-cosine"))
    pure_noise_share: float = option(0.1, "denoiser: share of training inputs that are pure noise (a first pass's "
                                     "input)", low=0, high=1)
    sample_passes: int = option(2, "denoiser: passes from noise that `sample` and the grids make (a pass: "
                                "x <- clamp(D(x), -1, 1))", **POSITIVE)
    # Optimisation
    lr: float = option(1e-3, "peak learning rate of AdamW", low=0, high=1, low_inclusive=False, high_inclusive=False)
    warmup_steps: int = option(100, "linear learning-rate warm-up", **NON_NEGATIVE)
    weight_decay: float = option(0.0, "AdamW weight decay", **NON_NEGATIVE)
    adam_beta2: float = option(0.99, "AdamW beta2", **FRACTION)
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)", **NON_NEGATIVE)
    ema_decay: float = option(0.995, "decay of the EMA of the weights used for sampling", **FRACTION)
    ema_warmup_steps: int = option(50, "0 = off; otherwise the EMA warm-up min(decay, (1 + n) / (10 + n))",
                                   **NON_NEGATIVE)

    def dim_mults_tuple(self) -> tuple[int, ...]:
        return parse_int_tuple(self.dim_mults, "dim_mults", allow_empty=False)

    def attn_resolutions_tuple(self) -> tuple[int, ...]:
        return parse_int_tuple(self.attn_resolutions, "attn_resolutions", allow_empty=True)


def check_denoiser_options(config: Any) -> None:
    unet_config(config, 3).validate()
    make_beta_schedule(config.beta_schedule, config.timesteps)


def build_denoiser_network(config: Any, image_channels: int) -> UNet:
    return UNet(unet_config(config, image_channels))


def denoise(network: torch.nn.Module, x: Tensor) -> Tensor:
    """D(x): the network's clean-image estimate, blind to the noise level (time input 0)."""
    return network(x, torch.zeros(x.shape[0], device=x.device))


def denoiser_pass(network: torch.nn.Module, x: Tensor) -> Tensor:
    """One pass: x <- clamp(D(x), -1, 1)."""
    return denoise(network, x).float().clamp(-1, 1)


def passes_from(network: torch.nn.Module, noise: Tensor, passes: int) -> Tensor:
    """K passes from `noise`: x^(0) = noise, x^(k) = pass(x^(k-1)); K = 0 returns the noise."""
    check_passes(passes)
    x = noise
    for _ in range(passes):
        x = denoiser_pass(network, x)
    return x


def check_passes(passes: int, option: str = "passes") -> None:
    if int(passes) != passes or passes < 0:
        raise ConfigError(f"{OPTION} must be a whole number >= 0; got {passes}", option=option)


def denoiser_inputs(schedule, x0: Tensor, generator: torch.Generator, pure_noise_share: float) -> Tensor:
    """The training inputs: q_sample(x0, t, eps) at t ~ U{0..T-1}, or eps alone with probability
    `pure_noise_share`."""
    batch = x0.shape[0]
    t = torch.randint(0, schedule.timesteps, (batch,), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    pure = torch.rand(batch, device=x0.device, generator=generator) < pure_noise_share
    noisy = q_sample(schedule, x0, t, noise)
    return torch.where(pure.reshape(-1, 1, 1, 1), noise, noisy)


class DenoiserTrainer:
    """The U-Net, its EMA, AdamW and the MSE to the clean image."""

    def __init__(self, config: Any, image_channels: int, device: torch.device):
        check_denoiser_options(config)
        self.config, self.device, self.image_channels = config, device, image_channels
        self.model = build_denoiser_network(config, image_channels).to(device)
        self.ema = EMA(self.model, decay=config.ema_decay, warmup=config.ema_warmup_steps > 0)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2),
                                           weight_decay=config.weight_decay, **optimizer_kernel(device))
        self.schedule = build_schedule(config, device)
        self.network: torch.nn.Module = self.model
        self.lr = config.lr

    def prepare(self, prepare: Callable[..., Any], example_images: Tensor, compile: bool,
                cuda_graphs: bool) -> str | None:
        example = (example_images, torch.zeros(example_images.shape[0], device=example_images.device))
        scope = resolve_compile_scope(self.config.compile_scope)
        network = compile_or_eager(self.model, example, enabled=compile, cuda_graphs=False, scope=scope)
        self.network, self.optimizer = prepare(network, self.optimizer)
        self.network.train()
        return scope if compile else None

    def train_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor]:
        config = self.config
        self.lr = config.lr * min(1.0, (context.step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        inputs = denoiser_inputs(self.schedule, images, context.generator, config.pure_noise_share)
        with context.autocast():
            loss = (denoise(self.network, inputs).float() - images.float()).pow(2).mean()
        context.backward(loss)
        if config.grad_clip > 0:
            context.clip_grad_norm(self.network.parameters(), config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model, context.step + 1)
        return {"loss": loss.detach()}

    def log_state(self) -> dict[str, float]:
        return {"lr": self.lr}

    def after_log(self, averages: dict[str, float], step: int) -> str | None:
        return None

    def state(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        return network_state(self.model, self.ema, self.optimizer)

    def load_state(self, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any]) -> None:
        load_network_state(self.model, self.ema, self.optimizer, tensors, meta)

    def preview(self, count: int, seed: int, steps: int | None = None, sampler: str | None = None) -> Tensor:
        generator = torch.Generator(self.device).manual_seed(seed)
        noise = torch.randn(count, self.image_channels, self.config.image_size, self.config.image_size,
                            device=self.device, generator=generator)
        return passes_from(self.ema.shadow, noise, self.config.sample_passes)


# ---- the generator ------------------------------------------------------------------------------------

# Sampling options of the other families with their "not given" values: a denoiser run refuses any other.
OTHER_FAMILIES = {"sampler": None, "steps": None, "eta": 0.0, "spacing": "uniform", "clip": None, "truncation": None}


def check_denoiser_sampling_options(options: dict[str, Any]) -> None:
    for name, unset in OTHER_FAMILIES.items():
        if options.get(name, unset) not in (unset, 1.0 if name == "truncation" else unset):
            raise ConfigError(f"{OPTION} does not apply to a denoiser run: it makes each image by passes from noise "
                              "(its option is {option:passes})", option=name)


def noise_generator(seed: int, first: int, device: torch.device) -> torch.Generator:
    """The stream of the denoiser's input noise for the batch starting at image `first`."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + first + 7_777_777)


class DenoiserGenerator:
    """A trained one-step denoiser: images are K passes from pure noise (K = the run's --sample-passes
    unless `passes` is given)."""

    family = "denoiser"
    speed = None
    guidance = None

    def __init__(self, network: UNet, step: int, checkpoint: Path, config: Any, image_channels: int):
        self.network = network.eval().requires_grad_(False)
        self.step, self.checkpoint, self.config, self.image_channels = step, checkpoint, config, image_channels

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_channels, self.config.image_size, self.config.image_size)

    def default_passes(self, passes: int | None) -> int:
        passes = self.config.sample_passes if passes is None else passes
        check_passes(passes)
        return int(passes)

    @torch.no_grad()
    def estimate(self, count: int, seed: int, first: int = 0, passes: int | None = None) -> Tensor:
        """`count` float images in [-1, 1] (K = 0: the noise itself) for images first, ..., first + count - 1."""
        generator = noise_generator(seed, first, self.device)
        noise = torch.randn(count, *self.image_shape(), device=self.device, generator=generator)
        return passes_from(self.network, noise, self.default_passes(passes))

    def generate(self, count: int, batch_size: int = 250, seed: int = 0, precision: str = "no",
                 passes: int | None = None, **other: Any) -> Iterator[tuple[int, Tensor]]:
        from difflab.generation.generate import autocast_for
        from difflab.viz.grid import to_uint8
        check_denoiser_sampling_options(other)
        passes = self.default_passes(passes)
        for first in range(0, count, batch_size):
            with torch.inference_mode(), autocast_for(self.device, precision):
                images = self.estimate(min(batch_size, count - first), seed, first, passes)
            yield first, to_uint8(images)

    def describe(self, passes: int | None = None, **other: Any) -> str:
        check_denoiser_sampling_options(other)
        return f"denoiser, {self.default_passes(passes)} pass(es)"

    def network_passes(self, count: int, batch_size: int, passes: int | None = None, **_: Any) -> int:
        return -(-count // max(batch_size, 1)) * self.default_passes(passes)

    def accelerated(self, speed) -> "DenoiserGenerator":
        return self

    def warm_up(self, batch_size: int, precision: str) -> None:
        for _ in self.generate(batch_size, batch_size, seed=0, precision=precision, passes=1):
            pass

    def study_settings(self, **_: Any) -> list:
        from difflab.experiments.study import SamplerSpec
        passes = self.config.sample_passes
        return [SamplerSpec("denoiser", passes, options=(("passes", passes),), name=f"denoiser-{passes}")]


def load_denoiser_generator(path, device, weights: str = "ema") -> DenoiserGenerator:
    from difflab.families import make_config
    from difflab.training.checkpoint import load_checkpoint, network_from_checkpoint
    checkpoint = load_checkpoint(path, groups=(weights,))
    network, config, channels = network_from_checkpoint(
        checkpoint, weights, lambda values: make_config(values, source="checkpoint config"), build_denoiser_network)
    network.to(device)
    return DenoiserGenerator(network, checkpoint.step, Path(checkpoint.path), config, channels)


FAMILY = Family(name="denoiser", help="the course report's one-step denoiser ('deep image prior'): a small U-Net, "
                "blind to the noise level, trained noisy -> clean with the MSE; a warm-start prior",
                options=DenoiserOptions, trainer=DenoiserTrainer, load_generator=load_denoiser_generator,
                check=check_denoiser_options, prior_kind="denoiser")
