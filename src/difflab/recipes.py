"""Named training recipes: option sets measured to work well for a dataset and budget.

Each is a plain dict of TrainConfig options, so it can be printed, saved and overridden.
"""
from __future__ import annotations

# MNIST at 28 px in minutes on a CPU. Chosen by a sweep on an H100 at 1,500 steps of
# batch 64, scored by the fixed MNIST classifier's confident-class rate (EMA weights):
# this recipe at lr 2e-3 33.6%, at lr 1e-3 37.9%; pred_noise + linear + no weighting 13.3%.
# (benchmarks/mnist_quality.py --sweep; table in benchmarks/RESULTS.md.)
MNIST = dict(data="mnist", image_size=28, image_channels="1", channels=32, dim_mults="1,2,2", res_blocks=1,
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

# And guide it (autoguidance, `difflab sample --guide auto --guidance 3.5`) with the run's own
# checkpoint from about 40% of its steps. Confident-digit rates, 256 samples (benchmarks/RESULTS.md):
# 8 CPU minutes, three runs: 55.1 / 53.9 / 48.4% -> 72.7 / 67.6 / 60.2% guided; one H200 minute, three
# seeds: 77.0 / 74.2 / 75.0% -> 90.6 / 86.3 / 85.2% guided. Weight 3.5 beat 2.5 in all five pairs.
MNIST_GUIDANCE = dict(guide="auto", weight=3.5)

# The no-download `difflab demo`: procedural shapes at 32 px, a few CPU minutes.
DEMO = dict(data="shapes", image_size=32, image_channels="3", channels=32, dim_mults="1,2,2", res_blocks=1,
            attn_resolutions="8", timesteps=1000, beta_schedule="cosine", objective="pred_v",
            loss_weighting="min_snr", batch_size=64, lr=1e-3, warmup_steps=100, ema_decay=0.995,
            ema_warmup_steps=50, steps=1500, max_minutes=6.0, save_every=500, log_every=25, grid_images=64,
            grid_sampler_steps=50, hflip=True)

RECIPES = {"mnist": MNIST, "demo": DEMO}
