"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself",
NeurIPS 2024): sample with D_guide + w (D_main - D_guide), where the guide is a weaker version
of the same model; here, an earlier checkpoint of the same run, which every run keeps anyway.

It needs no labels, unlike classifier-free guidance, so it fits difflab's unconditional models.
It pushes samples away from what the weaker model gets wrong. The paper reports that this
sharpens images without the loss of variety that truncation or lower noise brings.

The mix is applied to the network outputs. For a fixed x_t and t, every objective's output
(noise, x0 or v) is an affine function of the predicted x0 with the same coefficients in both
models, so mixing the outputs mixes the denoisers exactly, and clipping still acts on the guided x0.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class AutoGuidedNetwork(nn.Module):
    """A network whose output is guide + weight x (network - guide); weight 1 = the network alone."""

    def __init__(self, network: nn.Module, guide: nn.Module, weight: float) -> None:
        super().__init__()
        self.network, self.guide, self.weight = network, guide, float(weight)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        main_output, guide_output = self.network(x, t), self.guide(x, t)
        return torch.lerp(guide_output, main_output, self.weight)
