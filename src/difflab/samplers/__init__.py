"""Samplers: small pure functions with one signature,
`sampler(denoiser, x_T, schedule, timesteps, *, callback=None, generator=None, progress=False[, eta]) -> x_0`,
that receive the timesteps they visit (`timesteps_for`), registered by name in `SAMPLERS`."""
from difflab.samplers.common import Callback
from difflab.samplers.ddim import ddim_sigma, ddim_timesteps, invert_ddim, sample_ddim
from difflab.samplers.ddpm import sample_ddpm
from difflab.samplers.dpm_solver import sample_dpm_solver
from difflab.samplers.registry import (DEFAULT_SAMPLER, SAMPLERS, SamplerEntry, get_sampler, register_sampler,
                                       sampler_names)
from difflab.samplers.respace import respace, respaced_betas
from difflab.samplers.timesteps import SPACINGS, spaced_timesteps, timesteps_for

__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "SPACINGS", "Callback", "SamplerEntry", "ddim_sigma", "ddim_timesteps",
           "get_sampler", "invert_ddim", "register_sampler", "respace", "respaced_betas", "sample_ddim", "sample_ddpm",
           "sample_dpm_solver", "sampler_names", "spaced_timesteps", "timesteps_for"]
