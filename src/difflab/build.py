"""Build the network, schedule and loss that a (saved) training configuration describes.

Training and sampling both go through here, so a checkpoint's config always rebuilds
exactly the network that was trained."""
from __future__ import annotations

from typing import Any

import torch

from difflab.config import TrainConfig
from difflab.diffusion import DiffusionLoss, DiffusionSchedule, make_beta_schedule
from difflab.diffusion.schedules import conditioning_of
from difflab.network import UNet, UNetConfig


def as_config(config: TrainConfig | dict[str, Any]) -> TrainConfig:
    return config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config, source="checkpoint config")


def unet_config(config: TrainConfig, image_channels: int) -> UNetConfig:
    """The U-Net of a run's options (`auto` levels and attention resolved from the image size)."""
    return UNetConfig.from_options(config, image_channels)


def build_network(config: TrainConfig, image_channels: int, input_denoiser: dict | None = None) -> torch.nn.Module:
    """The run's U-Net; with --input-denoiser, wrapped so that it sees the frozen denoiser's output
    (families/input_denoiser.py), that denoiser built from `input_denoiser`, the record its checkpoints keep."""
    network = UNet(unet_config(config, image_channels))
    if not config.input_denoiser:
        return network
    from difflab.families.input_denoiser import with_input_denoiser
    return with_input_denoiser(network, input_denoiser, image_channels)


def build_schedule(config: TrainConfig, device: torch.device | str = "cpu") -> DiffusionSchedule:
    return DiffusionSchedule(make_beta_schedule(config.beta_schedule, config.timesteps), device,
                             conditioning_of(config.beta_schedule))


def build_loss(config: TrainConfig, schedule: DiffusionSchedule) -> DiffusionLoss:
    return DiffusionLoss(schedule, config.objective, config.loss_weighting, config.min_snr_gamma,
                         config.loss_norm)


def check_buildable(config: TrainConfig) -> None:
    """Fail before any work if the network or schedule options are inconsistent."""
    unet_config(config, 3).validate()
    make_beta_schedule(config.beta_schedule, config.timesteps)
