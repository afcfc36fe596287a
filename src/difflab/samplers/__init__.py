"""Samplers: small pure functions with one signature,
`sampler(denoiser, x_T, schedule, *, callback=None, generator=None, progress=False, ...) -> x_0`."""
from difflab.samplers.common import Callback
from difflab.samplers.ddim import ddim_sigma, ddim_timesteps, invert_ddim, sample_ddim
from difflab.samplers.ddpm import sample_ddpm

__all__ = ["Callback", "ddim_sigma", "ddim_timesteps", "invert_ddim", "sample_ddim", "sample_ddpm"]
