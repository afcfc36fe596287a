"""Named training recipes: option sets measured to work well for a dataset and budget.

Each is a plain dict of TrainConfig options, so it can be printed, saved and overridden.
`RECIPES` names the complete ones for `difflab train --recipe NAME` (flags given with it win).
"""
from __future__ import annotations

from typing import Any

from difflab.errors import OPTION, ConfigError
from difflab.families.stylegan2.options import STYLEGAN2_MNIST

# MNIST at 28 px in minutes on a CPU (benchmarks/mnist_quality.py; benchmarks/RESULTS.md has every row).
# pred_v + cosine + min-SNR: 37.9% confident digits at 1,500 steps of batch 64 where pred_noise +
# linear + no weighting reached 13.3%. The network is narrow where it is expensive: widths 16/32/64
# at 28/14/7 px and no attention, 0.11 s a step on 2 CPU cores, so 8 minutes make ~4,200 steps.
# Session 4's 24/48/48 with attention at 7 px cost 0.16 s (after session 5's attention fix). At
# the same CPU time, in GPU stand-ins with the session-5 guidance (256 samples each, guide at 20%
# / 30%), it averaged 81.2% over 4 seeds against 77.2% over 5.
MNIST = dict(data="mnist", image_size=28, image_channels="1", channels=16, dim_mults="1,2,4", res_blocks=1,
             attn_resolutions="", timesteps=1000, beta_schedule="cosine", objective="pred_v",
             loss_weighting="min_snr", batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995,
             ema_warmup_steps=50, hflip=False, save_every=250, keep_checkpoints=1000, log_every=100,
             grid_images=16, grid_sampler_steps=20, steps=100000)
# (Checkpoints every 250 steps, all kept: the early ones guide the sampler, MNIST_GUIDANCE.)

# How to sample the MNIST recipe's model: DDIM-50 with eta = 1 (stochastic, DDPM-like variance).
# One 7-minute CPU model, 256 samples, confident-class rate: eta 0 37.5%, eta 1 50.0%,
# DDIM-100 eta 1 48.8%; DDPM-1000 reached 50.8% on a model trained the same way, at 20x the
# sampling time (benchmarks/mnist_quality.py --samplers; benchmarks/RESULTS.md).
MNIST_SAMPLING = dict(sampler="ddim", steps=50, eta=1.0)

# And guide it (autoguidance: `difflab sample --guide auto --guide-fraction 0.2 --guidance 3.5
# --guide-min-t 100`) with the run's own checkpoint from about 20% of its steps, unguided below t = 100.
# Weight 3.5 beat 2.5 in all five pairs measured in session 3 and in 4 of 5 pairs in session 4;
# 5 was worse in 7 of 8 pairs (session 4) and mixed in session 5. Real 8-minute runs on 2 CPU cores:
# 81.2 / 87.5 / 83.6 / 78.1 / 85.5% confident digits (unguided 62-66%; real test digits: 90.2%).
# Session 4's recipe, guided at every step from 30%: 69.5 / 70.7 / 71.5%.
MNIST_GUIDANCE = dict(guide="auto", fraction=0.2, weight=3.5, min_t=100)
# One GPU minute trains the MNIST_GPU_MINUTE variant at batch 512 for ~1,250-1,500 steps (the network of
# session 4's CPU recipe at 64 channels); its best guide sits near 20% of the steps. Nine one-minute
# H200 runs, guided from t = 200 up: 89.8-93.4%, mean 91.4% (unguided 70-76%; real digits score 90.2%).
MNIST_GPU_MINUTE = dict(batch_size=512, channels=64, dim_mults="1,2,2", attn_resolutions="7", lr=2e-3, lr_decay="cosine")
MNIST_GPU_GUIDANCE = dict(guide="auto", fraction=0.2, weight=3.5, min_t=200)

# The no-download `difflab demo`: procedural shapes at 32 px in 6 CPU minutes on any 2-core CPU
# (issue 13). Narrow where it is expensive, like the MNIST recipe: widths 16/32/64 at 32/16/8 px and no
# attention, and the learning rate decays to zero over the time budget, which a short run gains most
# from. Session 5's 32/64/64 network with attention at 8 px cost 0.94 s a step in fp32 on an AMD EPYC
# (Zen 4) and drew blobs after 6 minutes there (448 steps); benchmarks/RESULTS.md has the steps, times
# and grids of both paths for this one.
DEMO = dict(data="shapes", image_size=32, image_channels="3", channels=16, dim_mults="1,2,4", res_blocks=1,
            attn_resolutions="", timesteps=1000, beta_schedule="cosine", objective="pred_v",
            loss_weighting="min_snr", batch_size=32, lr=2e-3, warmup_steps=100, lr_decay="cosine", ema_decay=0.995,
            ema_warmup_steps=50, steps=5000, max_minutes=6.0, save_every=5000, log_every=25, grid_images=16,
            grid_sampler_steps=50, hflip=True)

# The Keras DDIM lab ("Denoising Diffusion Implicit Models", keras.io examples, flowers at 64 px), at
# its settings: the continuous cosine schedule between signal rates 0.95 and 0.02 with noise-level
# conditioning, a U-Net of widths 32/64/96/128 with 2 blocks per level and no attention, noise
# prediction with a mean absolute error, AdamW lr 1e-3 and weight decay 1e-4, EMA 0.999, batch 64,
# random flips; its KID during training uses 5 diffusion steps, its plots 20. The lab normalises
# images by the dataset's mean and variance; difflab maps them to [-1, 1], as for every model.
# Not yet measured against the discrete default (issue 16's GPU run).
KERAS_LAB = dict(image_size=64, channels=32, dim_mults="1,2,3,4", res_blocks=2, attn_resolutions="",
                 beta_schedule="keras-cosine", objective="pred_noise", loss_norm="l1", loss_weighting="none",
                 clip="none", lr=1e-3, weight_decay=1e-4, warmup_steps=0, ema_decay=0.999, ema_warmup_steps=0,
                 batch_size=64, hflip=True, grid_sampler_steps=20, eval_sampler_steps=5)

# `difflab train --recipe NAME`: each complete, with the time budget it was measured at.
RECIPES: dict[str, dict[str, Any]] = {
    "mnist": {**MNIST, "max_minutes": 8.0},
    "mnist-gpu-minute": {**MNIST, **MNIST_GPU_MINUTE, "max_minutes": 1.0},
    "demo": DEMO,
    "stylegan2-mnist": STYLEGAN2_MNIST,
    "keras-lab": KERAS_LAB,
}
RECIPE_HELP = {
    "mnist": "MNIST, 28 px, 8 CPU minutes (~4,200 steps on 2 cores); sampling: MNIST_SAMPLING, MNIST_GUIDANCE",
    "mnist-gpu-minute": "MNIST, 28 px, one GPU minute at batch 512; sampling: MNIST_GPU_GUIDANCE",
    "demo": "procedural shapes, 32 px, 6 CPU minutes (what `difflab demo` trains)",
    "stylegan2-mnist": "a small StyleGAN2 (--model stylegan2) for MNIST, 32 px, 800 steps (~4 CPU minutes)",
    "keras-lab": "the Keras DDIM lab's model: keras-cosine schedule, noise-level conditioning, L1 loss, 64 px "
                 "(not yet measured against the default)",
}


def recipe(name: str) -> dict[str, Any]:
    """A copy of the named recipe's options; ConfigError naming the `recipe` option otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"{OPTION} must be one of {', '.join(RECIPES)}; got {name!r}", option="recipe")
    return dict(RECIPES[name])
