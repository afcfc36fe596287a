"""Model FLOPs per image, for reporting model FLOPs utilisation (MFU) in benchmarks."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from difflab.network.unet import UNet


def count_flops(model: UNet, image_size: int, batch: int = 1) -> int:
    """Forward-pass FLOPs per image at `image_size` x `image_size`.

    Counted by `FlopCounterMode`: matmuls, convolutions and attention, at 2 FLOPs per
    multiply-add; normalisations and activations are ignored (they are memory-bound).
    A training step costs about 3x this (forward plus twice for backward).
    """
    parameter = next(model.parameters())
    x = torch.zeros(
        batch, model.config.image_channels, image_size, image_size,
        device=parameter.device, dtype=parameter.dtype,
    )
    t = torch.zeros(batch, device=parameter.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t)
    return counter.get_total_flops() // batch
