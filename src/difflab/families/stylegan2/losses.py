"""StyleGAN2's losses and lazy regularisers (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", section 3.1 and appendix B; as in NVlabs stylegan2-ada-pytorch's loss.py):
- the non-saturating logistic loss for G and the logistic loss for D;
- R1 (Mescheder et al. 2018): gamma / 2 * ||grad_x D(x)||^2 on real images;
- path-length regularisation: (||J_w^T y|| - a)^2 for random image-space y, a the running mean;
- lazy regularisation: a regulariser evaluated every k steps is multiplied by k, and the Adam
  hyper-parameters are corrected (lr * c, beta ** c, c = k / (k + 1)) so that the per-image
  optimisation speed matches the regularised-every-step case."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating: -log sigmoid(D(G(z))) = softplus(-D(G(z)))."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Logistic: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def r1_penalty(real_images: Tensor, real_logits: Tensor) -> Tensor:
    """Per-sample ||grad_x D(x)||^2; `real_images` must require grad and `real_logits` come from
    them. create_graph=True: the penalty itself is differentiated for D's update."""
    (gradient,) = torch.autograd.grad(real_logits.float().sum(), real_images, create_graph=True)
    return gradient.float().square().sum(dim=[1, 2, 3])


def r1_loss(penalty: Tensor, gamma: float, interval: int) -> Tensor:
    """The lazy R1 term to backpropagate: gamma / 2 * E||grad||^2, times the lazy interval."""
    return penalty.mean() * (gamma / 2) * interval


def r1_gamma_heuristic(resolution: int, batch_size: int) -> float:
    """The reference's automatic gamma: 0.0002 * resolution^2 / batch size."""
    return 0.0002 * resolution ** 2 / batch_size


def path_lengths(images: Tensor, ws: Tensor, generator: torch.Generator) -> Tensor:
    """Per-sample ||J_w^T y||, y ~ N(0, I) / sqrt(H * W) (so the length does not grow with the
    resolution), averaged over the w's of the layers as the reference does."""
    h, w = images.shape[2], images.shape[3]
    noise = torch.randn(images.shape, generator=generator, device=generator.device).to(images.device) / math.sqrt(h * w)
    (gradient,) = torch.autograd.grad((images.float() * noise).sum(), ws, create_graph=True)
    return gradient.float().square().sum(dim=2).mean(dim=1).sqrt()


def path_length_loss(lengths: Tensor, pl_mean: Tensor, weight: float, interval: int,
                     decay: float = 0.01) -> tuple[Tensor, Tensor]:
    """(loss, updated running mean a). The mean moves towards this batch's mean length by `decay`."""
    new_mean = pl_mean.lerp(lengths.mean().detach(), decay)
    return (lengths - new_mean).square().mean() * weight * interval, new_mean


def lazy_adam_hyperparameters(lr: float, betas: tuple[float, float], interval: int,
                              regularised: bool = True) -> tuple[float, tuple[float, float]]:
    """lr * c and betas ** c with c = interval / (interval + 1) (1 when not regularised lazily)."""
    c = interval / (interval + 1) if regularised else 1.0
    return lr * c, (betas[0] ** c, betas[1] ** c)
