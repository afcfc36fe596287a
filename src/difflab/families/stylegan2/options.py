"""The StyleGAN2 family's own options, and the small CPU recipe for MNIST.

Defaults follow NVlabs stylegan2-ada-pytorch (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"; networks from Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN"), its 'paper256' configuration scaled to 64 px, with the small-resolution
choices of its 'cifar' configuration where those fit low resolutions better (2 mapping layers, no
path-length regularisation)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from difflab.config import check_declared_range, option
from difflab.errors import OPTION, ConfigError

POSITIVE = dict(low=0, low_inclusive=False)
NON_NEGATIVE = dict(low=0)
FRACTION = dict(low=0, high=1, high_inclusive=False)
PROBABILITY = dict(low=0, high=1)

AUGMENTS = ("ada", "diffaug", "none")


@dataclass
class StyleGAN2Options:
    """StyleGAN2's networks, losses, regularisers, EMA and augmentation."""
    # Networks
    z_dim: int = option(512, "StyleGAN2: dimension of the input latent z", **POSITIVE)
    w_dim: int = option(512, "StyleGAN2: dimension of the intermediate latent w", **POSITIVE)
    mapping_layers: int = option(2, "StyleGAN2: layers of the mapping network z -> w (the reference's cifar "
                                 "config uses 2; 8 at high resolutions)", **POSITIVE)
    channel_base: int = option(4096, "StyleGAN2: feature maps at resolution r are min(channel_base / r, "
                               "channel_max). 4096 at 64 px = paper256's profile shifted to 64 px: 512 channels at "
                               "4-8 px, 256 at 16, 128 at 32, 64 at 64; G 12.2M, D 14.0M parameters at 3 channels (2048: 6.8M and 9.1M, but only 32 channels at 64 px)",
                               **POSITIVE)
    channel_max: int = option(512, "StyleGAN2: most feature maps of any layer", **POSITIVE)
    mbstd_group: int = option(4, "StyleGAN2: minibatch standard deviation group size in D (a divisor of the "
                              "per-process batch is used when it does not divide it)", **POSITIVE)
    # Optimisation
    g_lr: float = option(0.0025, "StyleGAN2: Adam learning rate of G", low=0, high=1, low_inclusive=False)
    d_lr: float = option(0.0025, "StyleGAN2: Adam learning rate of D", low=0, high=1, low_inclusive=False)
    adam_beta1: float = option(0.0, "StyleGAN2: Adam beta1 of G and D", **FRACTION)
    adam_beta2: float = option(0.99, "StyleGAN2: Adam beta2 of G and D", **FRACTION)
    # Regularisation
    r1_gamma: float = option(0.0, "StyleGAN2: R1 weight gamma (0 = the reference's heuristic "
                             "0.0002 * image_size^2 / batch_size)", **NON_NEGATIVE)
    r1_interval: int = option(16, "StyleGAN2: lazy R1: penalise every this many D steps", **POSITIVE)
    pl_weight: float = option(0.0, "StyleGAN2: path-length regularisation weight (0 = off, as the reference's "
                              "cifar config; 2 = its default at high resolutions)", **NON_NEGATIVE)
    pl_interval: int = option(4, "StyleGAN2: lazy path-length regularisation every this many G steps", **POSITIVE)
    style_mixing: float = option(0.9, "StyleGAN2: probability of mixing two latents' styles in a G pass "
                                 "(0.9 = the reference's default for faces and paper256; its cifar config uses 0)",
                                 **PROBABILITY)
    # Augmentation
    augment: str = option("ada", "StyleGAN2: augmentation of D's inputs: ada (adaptive, Karras et al. 2020), "
                          "diffaug (DiffAugment colour,translation,cutout, Zhao et al. 2020) or none", AUGMENTS)
    ada_target: float = option(0.6, "StyleGAN2: ADA target of E[sign(D(real))]", **FRACTION)
    ada_interval: int = option(4, "StyleGAN2: adjust ADA's p every this many steps", **POSITIVE)
    ada_kimg: int = option(500, "StyleGAN2: ADA's p can go from 0 to 1 in this many thousand images", **POSITIVE)
    # EMA of G
    g_ema_kimg: float = option(10.0, "StyleGAN2: half-life of the EMA of G's weights, in thousands of images",
                               **NON_NEGATIVE)
    g_ema_rampup: float = option(0.05, "StyleGAN2: EMA ramp-up: half-life <= this fraction of the images seen so "
                                 "far (0 = no ramp-up)", **NON_NEGATIVE)

    def check(self) -> None:
        check_stylegan2_options(self)


def check_stylegan2_options(config) -> None:
    """ConfigError before any work for options a StyleGAN2 run cannot use. `config` is any object
    with StyleGAN2Options' fields and the run's image_size (and batch_size)."""
    for f in dataclasses.fields(StyleGAN2Options):
        if hasattr(config, f.name):
            check_declared_range(f.name, getattr(config, f.name), f.metadata)
    size = getattr(config, "image_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 8 or size & (size - 1):
        raise ConfigError(f"{OPTION} must be a power of two >= 8 for {{option:model}} stylegan2 (its generator "
                          f"doubles the resolution from 4x4); got {size!r}", option="image_size")
    if getattr(config, "mixed_precision", None) == "fp16":
        # G and D step with their own optimisers, unwrapped (see the trainer's prepare), so there is no
        # loss scaler between them; bf16 needs none.
        raise ConfigError("{option} fp16 is not available for {option:model} stylegan2: it would need a loss "
                          "scaler per network; use bf16 (the default on GPUs that have it) or no",
                          option="mixed_precision")
    if getattr(config, "compile_scope", None) == "blocks":
        raise ConfigError("{option} blocks is for the U-Net families (diffusion, denoiser); {option:model} stylegan2 "
                          "compiles its main passes whole", option="compile_scope")


# A small GAN for MNIST at 32 px that one CPU thread trains in about 4 minutes (tests/test_stylegan2.py
# measures it). Narrow networks (64 channels at 4-8 px, 32 at 16 px, 16 at 32 px: G 0.2M, D 0.2M
# parameters), no style mixing, no augmentation (60k images: D cannot overfit in 26k images seen),
# R1 gamma 0.1 (the heuristic's 0.0064 let D's logits swing more in trials), and a 2k-image EMA
# half-life for a run this short. Trials on the shared 2-core machine (1 thread; confident-class
# rate of 256 G_ema samples): 200 steps 0.4%, 400 7.0%, 600 6.2%, 800 8.6%, 1000 9.4%, still only
# 2 classes: GANs need far more images than a CPU sees in minutes (the reference trains for
# thousands of kimg). Thinner networks (channel_base 256) or lr 0.001 did not do better.
STYLEGAN2_MNIST = {
    "model": "stylegan2",
    "data": "mnist",
    "image_size": 32,
    "image_channels": "1",
    "hflip": False,
    "batch_size": 32,
    "steps": 800,
    "z_dim": 64,
    "w_dim": 64,
    "mapping_layers": 2,
    "channel_base": 512,
    "channel_max": 64,
    "mbstd_group": 4,
    "g_lr": 0.0025,
    "d_lr": 0.0025,
    "r1_gamma": 0.1,
    "r1_interval": 16,
    "pl_weight": 0.0,
    "style_mixing": 0.0,
    "augment": "none",
    "g_ema_kimg": 2.0,
    "g_ema_rampup": 0.05,
    "seed": 0,
}
