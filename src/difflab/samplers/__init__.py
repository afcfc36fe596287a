"""Samplers: small pure functions with one signature,
`sampler(denoiser, x_T, schedule, *, callback=None, generator=None, progress=False, ...) -> x_0`."""
from difflab.samplers.common import Callback
from difflab.samplers.ddim import ddim_sigma, ddim_timesteps, invert_ddim, sample_ddim
from difflab.samplers.ddpm import sample_ddpm
from difflab.samplers.dpm_solver import sample_dpm_solver

# The samplers that take any number of steps, with one signature (steps, eta, spacing, start_step).
FEW_STEP_SAMPLERS = {"ddim": sample_ddim, "dpmpp-2m": sample_dpm_solver}

__all__ = ["FEW_STEP_SAMPLERS", "Callback", "ddim_sigma", "ddim_timesteps", "invert_ddim", "sample_ddim", "sample_ddpm", "sample_dpm_solver"]
