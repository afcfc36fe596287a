"""Named training recipes: option sets measured to work well for a dataset and budget.

Each is a plain dict of TrainConfig options, so it can be printed, saved and overridden.
"""
from __future__ import annotations

# MNIST at 28 px in minutes on a CPU. Chosen by a sweep on an H100 at 1,500 steps of
# batch 64, scored by the fixed MNIST classifier's confident-class rate (EMA weights):
# this recipe at lr 2e-3 33.6%, at lr 1e-3 37.9%; pred_noise + linear + no weighting 13.3%.
# Width 24, not 32: a step costs 0.174 s instead of 0.246 s on 2 CPU cores, so 8 minutes make
# ~2,760 steps instead of ~1,950, and the guided rate rose from 71.5% (4 seeds) to 75.3% (5 seeds)
# in fixed-step stand-ins for 8 CPU minutes. (benchmarks/mnist_quality.py --sweep; benchmarks/RESULTS.md.)
MNIST = dict(data="mnist", image_size=28, image_channels="1", channels=24, dim_mults="1,2,2", res_blocks=1,
             attn_resolutions="7", timesteps=1000, beta_schedule="cosine", objective="pred_v",
             loss_weighting="min_snr", batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995,
             ema_warmup_steps=50, hflip=False, save_every=250, keep_checkpoints=1000, log_every=100,
             grid_images=16, grid_sampler_steps=20, steps=100000)
# (Checkpoints every 250 steps, all kept: the early ones guide the sampler, MNIST_GUIDANCE.)

# How to sample the MNIST recipe's model: DDIM-50 with eta = 1 (stochastic, DDPM-like variance).
# One 7-minute CPU model, 256 samples, confident-class rate: eta 0 37.5%, eta 1 50.0%,
# DDIM-100 eta 1 48.8%; DDPM-1000 reached 50.8% on a model trained the same way, at 20x the
# sampling time (benchmarks/mnist_quality.py --samplers; benchmarks/RESULTS.md).
MNIST_SAMPLING = dict(sampler="ddim", steps=50, eta=1.0)

# And guide it (autoguidance, `difflab sample --guide auto --guide-fraction 0.3 --guidance 3.5`) with
# the run's own checkpoint from about 30% of its steps. Weight 3.5 beat 2.5 in all five pairs measured
# in session 3 and in 4 of 5 pairs of the 24-channel recipe; 5 was worse (benchmarks/RESULTS.md).
# Three real 8-minute runs on 2 CPU cores: 69.5 / 70.7 / 71.5% confident digits (unguided 53-63%).
MNIST_GUIDANCE = dict(guide="auto", fraction=0.3, weight=3.5)
# One GPU minute trains the MNIST_GPU_MINUTE variant at batch 512 for ~1,450 steps; its best guide sat
# earlier, near 20% of the steps. Three one-minute H200 runs: 89.1 / 90.6 / 90.6% (unguided 72-75%).
MNIST_GPU_MINUTE = dict(batch_size=512, channels=64, lr=2e-3, lr_decay="cosine")
MNIST_GPU_GUIDANCE = dict(guide="auto", fraction=0.2, weight=3.5)

# The no-download `difflab demo`: procedural shapes at 32 px, a few CPU minutes.
DEMO = dict(data="shapes", image_size=32, image_channels="3", channels=32, dim_mults="1,2,2", res_blocks=1,
            attn_resolutions="8", timesteps=1000, beta_schedule="cosine", objective="pred_v",
            loss_weighting="min_snr", batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995,
            ema_warmup_steps=50, steps=1500, max_minutes=6.0, save_every=500, log_every=25, grid_images=64,
            grid_sampler_steps=50, hflip=True)

RECIPES = {"mnist": MNIST, "demo": DEMO}
