"""Load a trained model for sampling from a run folder or a checkpoint file."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from difflab.build import as_config, build_network, build_schedule
from difflab.config import TrainConfig
from difflab.diffusion import Denoiser, DiffusionSchedule, make_denoiser
from difflab.errors import ConfigError
from difflab.training.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from difflab.generation.fast import SamplingSpeed


@dataclass
class LoadedModel:
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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str | Path, device: str | torch.device | None = None, weights: str = "ema") -> LoadedModel:
    """The EMA (default) or raw weights of the latest checkpoint under `path`, rebuilt from the
    configuration saved inside the checkpoint; no code from the file is executed."""
    if weights not in ("ema", "model"):
        raise ConfigError(f"--weights must be ema or model; got {weights!r}")
    device = torch.device(device) if device else default_device()
    checkpoint = load_checkpoint(path, groups=(weights,))
    config = as_config(checkpoint.config)
    image_channels = int(checkpoint.meta["image_channels"])
    network = build_network(config, image_channels)
    network.load_state_dict(checkpoint.tensors[weights])
    network.to(device).eval().requires_grad_(False)
    return LoadedModel(network, build_schedule(config, device), config, image_channels, checkpoint.step,
                       checkpoint.path)
