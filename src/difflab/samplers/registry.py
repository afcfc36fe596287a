"""The samplers by name: one entry each, and everything else reads from here (the `--sampler`
choices and help of `sample`, `progress` and `fuse`, compare's `--samplers`, the labels, the
study's table and plot colours).

Adding a sampler: write `sample_x(denoiser, x, schedule, timesteps, *, callback=None,
generator=None, progress=False[, eta=0.0])` in its own module, with a docstring naming the
paper, and add one `register_sampler(SamplerEntry(...))` line below."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from difflab.diffusion.denoiser import Denoiser
from difflab.diffusion.process import DiffusionSchedule
from difflab.errors import ConfigError
from difflab.samplers import ddim, ddpm, dpm_solver
from difflab.samplers.common import Callback

Sampler = Callable[..., Tensor]
"""sampler(denoiser, x, schedule, timesteps, *, callback, generator, progress[, eta]) -> x_0"""


@dataclass(frozen=True)
class SamplerEntry:
    """One sampler: its function and what the command line, labels, tables and plots show of it."""

    name: str  # the `--sampler` word, e.g. "ddim"
    function: Sampler
    display_name: str  # in labels (DDIM-50) and tables
    colour: str  # its points in compare's quality-against-time plot (a matplotlib colour)
    help: str  # one line for `--sampler`'s help
    default_steps: int | None = None  # network evaluations per image when --steps is not given; None: all T
    eta: str | None = None  # what eta means to it; None: it takes no eta
    noise: str = ""  # for a sampler without eta: how it draws noise (compare's eta column)
    reference: bool = False  # the row compare's speed-ups are measured against, when the study has one

    def steps_for(self, timesteps: int, steps: int | None = None) -> int:
        """Network evaluations per image: `steps`, else the default, for a model of `timesteps` steps."""
        return steps if steps is not None else self.default_steps or timesteps

    def check_eta(self, eta: float) -> None:
        if eta and self.eta is None:
            takes = ", ".join(entry.name for entry in SAMPLERS.values() if entry.eta is not None)
            raise ConfigError(f"{{option}} applies to the samplers with noise to choose ({takes}); {self.name} has "
                              f"none (it is {self.noise or 'fixed'}); got {eta:g}", option="eta")

    def eta_cell(self, eta: float) -> str:
        """The study table's eta column: the value, or how a sampler without eta draws noise."""
        return f"{eta:g}" if self.eta is not None else self.noise

    def sample(self, denoiser: Denoiser, x: Tensor, schedule: DiffusionSchedule, timesteps: Sequence[int], *,
               eta: float = 0.0, callback: Callback | None = None, generator: torch.Generator | None = None,
               progress: bool = False) -> Tensor:
        """Run the sampler from x at timesteps[0] over `timesteps` (samplers.timesteps_for)."""
        self.check_eta(eta)
        extra = {"eta": eta} if self.eta is not None else {}
        return self.function(denoiser, x, schedule, list(timesteps), callback=callback, generator=generator,
                             progress=progress, **extra)


SAMPLERS: dict[str, SamplerEntry] = {}
DEFAULT_SAMPLER = "ddim"


def register_sampler(entry: SamplerEntry) -> SamplerEntry:
    SAMPLERS[entry.name] = entry
    return entry


def sampler_names() -> tuple[str, ...]:
    return tuple(SAMPLERS)


def get_sampler(name: str) -> SamplerEntry:
    """The registered sampler `name`; a ConfigError naming the choices otherwise."""
    entry = SAMPLERS.get(name)
    if entry is None:
        raise ConfigError(f"{{option}} must be one of {', '.join(SAMPLERS)}; got {name!r}", option="sampler")
    return entry


ETA = "0 deterministic, 1 DDPM-like noise at every step"
register_sampler(SamplerEntry(
    "ddpm", ddpm.sample_ddpm, "DDPM", "tab:red", "DDPM ancestral sampling, respaced for fewer steps than T",
    default_steps=ddpm.DEFAULT_STEPS, noise="ancestral", reference=True))
register_sampler(SamplerEntry(
    "ddim", ddim.sample_ddim, "DDIM", "tab:blue", "DDIM, first order, deterministic at eta 0",
    default_steps=ddim.DEFAULT_STEPS, eta=ETA))
register_sampler(SamplerEntry(
    "dpmpp-2m", dpm_solver.sample_dpm_solver, "DPM-Solver++(2M)", "tab:green",
    "DPM-Solver++(2M), second order, for few steps", default_steps=dpm_solver.DEFAULT_STEPS, eta=ETA))
