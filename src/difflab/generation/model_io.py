"""Load a trained model for sampling from a run folder or a checkpoint file."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from difflab.build import as_config, build_network, build_schedule
from difflab.config import TrainConfig
from difflab.diffusion import Denoiser, DiffusionSchedule, make_denoiser
from difflab.errors import OPTION, ConfigError, DataError
from difflab.training.checkpoint import load_checkpoint, network_from_checkpoint

if TYPE_CHECKING:
    from difflab.generation.fast import SamplingSpeed


@dataclass
class LoadedModel:
    """A trained diffusion model: the diffusion family's generator (families/base.py's
    ImageGenerator), sampled by any of the samplers."""
    network: nn.Module
    schedule: DiffusionSchedule
    config: TrainConfig
    image_channels: int
    step: int
    checkpoint: Path
    speed: "SamplingSpeed | None" = None  # set by accelerated(); None = the plain network
    guidance: dict | None = None  # set by generation/guide.py: guide checkpoint, its step, weight

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def denoiser(self, clip: str | None = None) -> Denoiser:
        return make_denoiser(self.network, self.schedule, self.config.objective, clip or self.config.clip)

    def accelerated(self, speed: "SamplingSpeed") -> "LoadedModel":
        """The same model with the switched-on sampling fast paths (generation/fast.py)."""
        from difflab.generation.fast import fast_network
        return replace(self, network=fast_network(self.network, speed), speed=speed)

    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_channels, self.config.image_size, self.config.image_size)

    # ---- the ImageGenerator interface (families/base.py) ------------------------------------------
    family = "diffusion"

    def generate(self, count: int, batch_size: int = 250, seed: int = 0, precision: str = "no",
                 sampler: str | None = None, steps: int | None = None, eta: float = 0.0, spacing: str = "uniform",
                 clip: str | None = None, truncation: float | None = None):
        """generation.generate_images with this model; `truncation` is a GAN's and is refused."""
        from difflab.generation.generate import generate_images
        check_no_truncation(truncation)
        return generate_images(self, count, batch_size, sampler or "ddim", steps, eta, seed, precision, spacing, clip)

    def describe(self, sampler: str | None = None, steps: int | None = None, **_) -> str:
        from difflab.generation.generate import sampler_label
        return sampler_label(sampler or "ddim", steps, self.schedule.timesteps)

    def network_passes(self, count: int, batch_size: int, sampler: str | None = None, steps: int | None = None,
                       **_) -> int:
        from difflab.generation.fast import network_passes
        from difflab.generation.generate import sampler_steps
        return network_passes(count, batch_size, sampler_steps(sampler or "ddim", steps, self.schedule.timesteps))


    def warm_up(self, batch_size: int, precision: str) -> None:
        from difflab.experiments.study import warm_up_diffusion
        warm_up_diffusion(self, batch_size, precision)

    def study_settings(self, samplers: str = "ddim:50", **_) -> list:
        """The rows of `difflab compare` for this model: one per --samplers entry."""
        from difflab.experiments.study import parse_sampler_specs
        return parse_sampler_specs(samplers, self.schedule.timesteps)


def check_no_truncation(truncation: float | None) -> None:
    if truncation not in (None, 1.0):
        raise ConfigError("{option} applies to GAN runs (StyleGAN2's psi); a diffusion model's counterpart "
                          "is autoguidance ({option:guide} auto {option:guidance} W)", option="truncation")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str | Path, device: str | torch.device | None = None, weights: str = "ema") -> LoadedModel:
    """The EMA (default) or raw weights of the latest checkpoint under `path`, rebuilt from the
    configuration saved inside the checkpoint; no code from the file is executed."""
    if weights not in ("ema", "model"):
        raise ConfigError(f"{OPTION} must be ema or model; got {weights!r}", option="weights")
    device = torch.device(device) if device else default_device()
    checkpoint = load_checkpoint(path, groups=(weights,))
    from difflab.families import checkpoint_family
    family = checkpoint_family(checkpoint.config, checkpoint.meta)
    if family != "diffusion":
        raise DataError(f"{checkpoint.path} is a {family} run; this needs a diffusion model "
                        "(`difflab sample`, `eval` and `compare` take either)")
    # Everything is checked before anything is allocated: a stranger's file fails with a message.
    build = partial(build_network, input_denoiser=checkpoint.meta.get("input_denoiser"))  # --input-denoiser's D
    network, config, image_channels = network_from_checkpoint(checkpoint, weights, as_config, build)
    network.to(device).eval().requires_grad_(False)
    return LoadedModel(network, build_schedule(config, device), config, image_channels, checkpoint.step,
                       checkpoint.path)
