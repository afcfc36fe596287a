"""Warm-started sampling: a truncated reverse process (SDEdit, Meng et al. 2022; ES-DDPM, Lyu et al.
2022; TDPM, Zheng et al. 2022).

    estimate  = prior_estimate(prior, ...)           an estimate of x0 from a prior
    x_t0      = q_sample(estimate, t0, noise)        noised to step t0 in closed form (q(x_t0 | x0))
    images    = sampler(x_t0, timesteps_for(T, steps, spacing, start_step=t0))

Three priors, one code path:
- a denoiser run (`--model denoiser`): K = `passes` passes from pure noise (families/denoiser.py
  defines a pass; K = 0 is the noise itself);
- a GAN run (`--model stylegan2`): one sample of the generator at psi 1 (ES-DDPM's and TDPM's prior);
- an image folder or .zip: its images, resized and centre-cropped to the model's size, image i of
  the output from image i mod N of the folder (SDEdit's image-to-image).

Without a prior, start_t must be T - 1, and x_{T-1} is the same pure noise that plain sampling
draws: the result equals `generate_images` bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from difflab.diffusion.process import DiffusionSchedule, q_sample
from difflab.errors import OPTION, ConfigError
from difflab.generation.generate import autocast_for, batch_generator, run_sampler, sampler_label
from difflab.generation.outputs import check_finite
from difflab.samplers import DEFAULT_SAMPLER, get_sampler
from difflab.viz.grid import to_uint8

PRIOR_SEED_OFFSET = 4_242_424  # the prior's random stream is not the sampler's


def is_run(path: str | Path) -> bool:
    """A difflab run folder or checkpoint file (anything else is read as images)."""
    path = Path(path)
    return path.suffix == ".safetensors" or (path / "checkpoints").is_dir() or (path / "latest.json").is_file()


def prior_kind(source: str | Path) -> str:
    """"denoiser", "gan" or "folder", from the checkpoint's metadata alone (no weights are read)."""
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{OPTION}: no such run or image folder {str(source)!r}", option="warm_start")
    if not is_run(path):
        return "folder"
    from difflab.families import checkpoint_family, get_family
    from difflab.training.checkpoint import load_checkpoint
    checkpoint = load_checkpoint(path, groups=())
    family = checkpoint_family(checkpoint.config, checkpoint.meta)
    kind = get_family(family).prior_kind  # the family's registry entry says what prior it gives
    if kind is None:
        raise ConfigError(f"{OPTION} must be a denoiser run, a GAN run or an image folder; {path} is a {family} run",
                          option="warm_start")
    return kind


def check_warm_start(source: str | None, passes: int | None, start_t: int | None, timesteps: int) -> int:
    """The start step, after every check that needs no weights: --start-t in [0, T-1] (and below
    T-1 only with a prior), --warm-passes only with a denoiser prior, --warm-start a usable source."""
    from difflab.families.denoiser import check_passes
    if start_t is None:
        if source is not None:
            raise ConfigError(f"{{option:warm_start}} needs {OPTION}: the step 0 ... {timesteps - 1} to noise the "
                              "estimate to and sample from", option="start_t")
        start_t = timesteps - 1
    if not 0 <= start_t < timesteps:
        raise ConfigError(f"{OPTION} must be between 0 and {timesteps - 1} (the model's timesteps); got {start_t}",
                          option="start_t")
    if source is None and start_t != timesteps - 1:
        raise ConfigError(f"{OPTION} below {timesteps - 1} needs {{option:warm_start}}: a prior whose estimate is "
                          "noised to that step", option="start_t")
    if passes is not None:
        check_passes(passes, option="warm_passes")
        if source is None or prior_kind(source) != "denoiser":
            raise ConfigError(f"{OPTION} counts denoiser passes; it needs {{option:warm_start}} to be a denoiser run "
                              f"(got {source or 'no prior'})", option="warm_passes")
    elif source is not None:
        prior_kind(source)
    return int(start_t)


@dataclass
class Prior:
    """Where estimates of x0 come from: a denoiser or GAN generator, or a set of images."""
    kind: str  # "denoiser", "gan" or "folder"
    source: str
    generator: Any = None  # the denoiser's or the GAN's ImageGenerator
    images: Any = None  # a BaseImageDataset of uint8 (C, S, S) images (folder)

    def label(self, passes: int | None) -> str:
        if self.kind == "denoiser":
            return f"denoiser x{self.generator.default_passes(passes)}"
        return "GAN" if self.kind == "gan" else f"images of {Path(self.source).name}"

    def network_passes(self, passes: int | None) -> int:
        """Prior network evaluations per image (images of a folder cost none)."""
        return self.generator.default_passes(passes) if self.kind == "denoiser" else int(self.kind == "gan")


def load_prior(source: str | Path, image_shape: tuple[int, int, int], device: torch.device | str) -> Prior:
    """The prior `source` names, for a model of `image_shape` (C, H, W): a run of another size or
    number of channels is refused; a folder's images are resized to it."""
    kind = prior_kind(source)
    if kind == "folder":
        from difflab.data import load_dataset
        images = load_dataset(str(source), image_size=image_shape[-1], channels=image_shape[0], progress=False)
        if len(images) == 0:
            raise ConfigError(f"{OPTION}: {source} holds no readable images", option="warm_start")
        return Prior(kind, str(source), images=images)
    from difflab.families import load_generator
    generator = load_generator(source, device=device)
    if tuple(generator.image_shape()) != tuple(image_shape):
        raise ConfigError(f"{OPTION}: {source} makes images of {shape_label(generator.image_shape())}; the diffusion "
                          f"model's are {shape_label(image_shape)}", option="warm_start")
    return Prior(kind, str(source), generator=generator)


def shape_label(shape) -> str:
    """"28x28 px, 1 channel" for a (channels, height, width) shape."""
    channels, height, width = shape
    return f"{height}x{width} px, {channels} channel{'s' if channels > 1 else ''}"


@torch.no_grad()
def prior_estimate(prior: Prior, count: int, seed: int, passes: int | None = None, first: int = 0) -> Tensor:
    """Estimates of x0 for output images first, ..., first + count - 1: float (count, C, H, W) in [-1, 1].
    Denoiser: K = `passes` passes from noise; GAN: one sample at psi 1; folder: image (first + i) mod N."""
    if prior.kind == "denoiser":
        return prior.generator.estimate(count, seed, first, passes)
    if prior.kind == "gan":
        gan_seed = seed * 1_000_003 + first + PRIOR_SEED_OFFSET
        _, images = next(iter(prior.generator.generate(count, count, seed=gan_seed, truncation=1.0)))
    else:
        images = torch.stack([prior.images[(first + i) % len(prior.images)] for i in range(count)])
    return images.float().div(127.5).sub(1.0)


def noise_to(schedule: DiffusionSchedule, estimate: Tensor, start_t: int, noise: Tensor) -> Tensor:
    """x_t0 = q_sample(estimate, t0, noise) = sqrt(a_t0) estimate + sqrt(1 - a_t0) noise."""
    t = torch.full((estimate.shape[0],), start_t, device=estimate.device, dtype=torch.long)
    return q_sample(schedule, estimate, t, noise)


def warm_steps(sampler: str, steps: int | None, start_t: int) -> int:
    """Sampler steps over t0, ..., 0: `steps`, else the sampler's default capped at the t0 + 1 steps
    there are (DDPM: all of them)."""
    if steps is not None:
        return steps
    available = start_t + 1
    return min(get_sampler(sampler).steps_for(available), available)


@dataclass
class WarmStarted:
    """A diffusion model (LoadedModel) whose sampling starts at `start_t` from a prior's noised
    estimate: an ImageGenerator for `sample` and the ablation."""
    model: Any  # LoadedModel
    prior: Prior | None
    start_t: int
    passes: int | None = None

    family = "diffusion"

    # ---- delegated to the model -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def network(self):
        return self.model.network

    @property
    def checkpoint(self):
        return self.model.checkpoint

    @property
    def step(self) -> int:
        return self.model.step

    @property
    def config(self):
        return self.model.config

    @property
    def speed(self):
        return self.model.speed

    @property
    def guidance(self):
        return self.model.guidance

    @property
    def schedule(self) -> DiffusionSchedule:
        return self.model.schedule

    def image_shape(self) -> tuple[int, int, int]:
        return self.model.image_shape()

    def accelerated(self, speed) -> "WarmStarted":
        return replace(self, model=self.model.accelerated(speed))

    def warm_up(self, batch_size: int, precision: str) -> None:
        self.model.warm_up(batch_size, precision)

    # ---- the ImageGenerator interface ---------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """What the manifest and the ablation record."""
        return {"prior": self.prior.source if self.prior else None, "kind": self.prior.kind if self.prior else None,
                "passes": self.prior.generator.default_passes(self.passes) if self.prior and self.prior.kind == "denoiser"
                else None, "start_t": self.start_t}

    def describe(self, sampler: str | None = None, steps: int | None = None, **_: Any) -> str:
        sampler = sampler or DEFAULT_SAMPLER
        label = sampler_label(sampler, warm_steps(sampler, steps, self.start_t), self.schedule.timesteps)
        if self.prior is None:
            return label
        return f"{self.prior.label(self.passes)} + {label} from t0 = {self.start_t}"

    def sampler_evaluations(self, sampler: str | None = None, steps: int | None = None, **_: Any) -> int:
        return warm_steps(sampler or DEFAULT_SAMPLER, steps, self.start_t)

    def prior_evaluations(self) -> int:
        return self.prior.network_passes(self.passes) if self.prior else 0

    def network_passes(self, count: int, batch_size: int, sampler: str | None = None, steps: int | None = None,
                       **_: Any) -> int:
        from difflab.generation.fast import network_passes
        return network_passes(count, batch_size, self.sampler_evaluations(sampler, steps))

    def generate(self, count: int, batch_size: int = 250, seed: int = 0, precision: str = "no",
                 sampler: str | None = None, steps: int | None = None, eta: float = 0.0, spacing: str = "uniform",
                 clip: str | None = None, truncation: float | None = None) -> Iterator[tuple[int, Tensor]]:
        """As generation.generate_images, each batch from the prior's noised estimate at start_t."""
        from difflab.generation.model_io import check_no_truncation
        check_no_truncation(truncation)
        if count <= 0 or batch_size <= 0:
            raise ConfigError(f"{OPTION} and {{option:batch_size}} must be positive", option="num_images")
        sampler = sampler or DEFAULT_SAMPLER
        steps = warm_steps(sampler, steps, self.start_t)
        for first in range(0, count, batch_size):
            size = min(batch_size, count - first)
            generator = batch_generator(seed, first, self.device)
            with torch.inference_mode(), autocast_for(self.device, precision):
                x = self.start(size, seed, first, generator)
                images = run_sampler(self.model, x, sampler, steps, eta, spacing, generator=generator, clip=clip,
                                     start_step=self.start_t)
            check_finite(images)
            yield first, to_uint8(images)

    def start(self, size: int, seed: int, first: int, generator: torch.Generator) -> Tensor:
        """x at start_t for images first, ..., first + size - 1: pure noise without a prior (what plain
        sampling draws), else q_sample(estimate, start_t, noise)."""
        noise = torch.randn(size, *self.image_shape(), device=self.device, generator=generator)
        if self.prior is None:
            return noise
        estimate = prior_estimate(self.prior, size, seed, self.passes, first).to(self.device)
        return noise_to(self.schedule, estimate, self.start_t, noise)


def with_warm_start(model, source: str | None, start_t: int | None, passes: int | None = None,
                    prior: Prior | None = None) -> WarmStarted:
    """`model` (a diffusion LoadedModel) sampling from `start_t` with the prior `source`, checked
    before any sampling (check_warm_start, then the prior's size). `prior`: one already loaded."""
    start_t = check_warm_start(source, passes, start_t, model.schedule.timesteps)
    if prior is None and source is not None:
        prior = load_prior(source, model.image_shape(), model.device)
    return WarmStarted(model, prior, start_t, passes)
