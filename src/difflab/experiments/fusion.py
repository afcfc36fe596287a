"""Fusing two images with a trained diffusion model, two ways.

`noise-mix` (the homework's method): noise both images to timestep t with q_sample,
mix the noisy images with weight lambda, and denoise from t:

    x_t = (1 - lam) * q_sample(a, t, noise_a) + lam * q_sample(b, t, noise_b)

With the default `shared` noise (noise_a = noise_b) the mixture has exactly the noise
level of timestep t, so the network sees the input it was trained on; this equals
noising the pixel blend (1 - lam) a + lam b, i.e. SDEdit of the cross-fade. With
`independent` noises, as the formula is often read, the noise std shrinks to
sqrt((1 - lam)^2 + lam^2) of what t implies (0.71 at lam = 0.5): the network, told
the noise level of t, takes part of the images' detail for noise and removes it, so the
results come out smoother and flatter. Both are offered so the difference can be seen.

`ddim-slerp`: deterministic DDIM inversion of both images to x_{T-1}, spherical
interpolation of the two latents (which keeps their norm, unlike a straight mix of two
Gaussian vectors), then deterministic DDIM decoding (Song et al. 2021, sec. 5.3-5.4).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from difflab.diffusion import q_sample
from difflab.errors import ConfigError
from difflab.generation import LoadedModel, autocast_for, run_sampler
from difflab.generation.generate import sampler_steps, sampler_timesteps
from difflab.samplers import get_sampler, invert_ddim, sample_ddim

METHODS = ("noise-mix", "ddim-slerp")
NOISE_MODES = ("shared", "independent")


@dataclass(frozen=True)
class FusionSettings:
    """How to fuse: the method, its start timestep (noise-mix only) and the sampler options."""

    method: str = "noise-mix"
    t: int | None = None  # noise-mix start timestep; default T // 2
    noise: str = "shared"
    sampler: str | None = None  # default: DDPM for noise-mix (the homework), DDIM for ddim-slerp
    steps: int | None = None  # sampler steps, at most t + 1 (ddim-slerp: for both inversion and decoding)
    eta: float = 0.0
    spacing: str = "uniform"
    clip: str | None = None
    precision: str = "no"

    @property
    def resolved_sampler(self) -> str:
        return self.sampler or ("ddim" if self.method == "ddim-slerp" else "ddpm")

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"{{option}} must be one of {', '.join(METHODS)}; got {self.method!r}", option="method")
        if self.noise not in NOISE_MODES:
            raise ConfigError(f"{{option}} must be one of {', '.join(NOISE_MODES)}; got {self.noise!r}",
                              option="noise")
        if self.method == "ddim-slerp" and self.t is not None:
            raise ConfigError("{option} applies to {option:method} noise-mix only; ddim-slerp inverts to pure noise",
                              option="t")
        if self.method == "ddim-slerp" and (self.resolved_sampler != "ddim" or self.eta != 0):
            raise ConfigError("{option:method} ddim-slerp is deterministic DDIM: use {option} ddim and {option:eta} 0",
                              option="sampler")
        get_sampler(self.resolved_sampler).check_eta(self.eta)


def slerp(a: Tensor, b: Tensor, lam: Tensor | float) -> Tensor:
    """Spherical interpolation per sample (over all but the first dimension), lam in [0, 1].

    Endpoints are returned exactly; nearly parallel vectors fall back to a straight mix."""
    lam = torch.as_tensor(lam, dtype=a.dtype, device=a.device).reshape(-1, *([1] * (a.ndim - 1)))
    a_flat, b_flat = a.flatten(1), b.flatten(1)
    cosine = (a_flat * b_flat).sum(1) / (a_flat.norm(dim=1) * b_flat.norm(dim=1))
    theta = torch.arccos(cosine.clamp(-1, 1)).reshape(-1, *([1] * (a.ndim - 1)))
    sin_theta = torch.sin(theta)
    spherical = (torch.sin((1 - lam) * theta) * a + torch.sin(lam * theta) * b) / sin_theta.clamp(min=1e-8)
    straight = (1 - lam) * a + lam * b
    mixed = torch.where(sin_theta > 1e-4, spherical, straight)
    return torch.where(lam == 0, a, torch.where(lam == 1, b, mixed))


def mix_noisy(loaded: LoadedModel, images_a: Tensor, images_b: Tensor, lams: Tensor, t: int,
              noise: str = "shared", generator: torch.Generator | None = None) -> Tensor:
    """The homework's x_t: the two images noised to step t, mixed with weights (1 - lam, lam).

    Noise is drawn once per image in `images_a`, so one pair spread over several lambdas
    shares its noise and only lambda changes along a strip."""
    noise_a = torch.randn(images_a.shape, device=images_a.device, generator=generator)
    noise_b = noise_a if noise == "shared" else torch.randn(images_b.shape, device=images_b.device,
                                                            generator=generator)
    size = max(len(images_a), len(lams))
    steps = torch.full((size,), t, device=images_a.device, dtype=torch.long)

    def noised(images: Tensor, image_noise: Tensor) -> Tensor:
        return q_sample(loaded.schedule, images.expand(size, -1, -1, -1), steps, image_noise.expand(size, -1, -1, -1))

    weights = lams.to(images_a.device).reshape(-1, 1, 1, 1)
    return (1 - weights) * noised(images_a, noise_a) + weights * noised(images_b, noise_b)


def denoise_from(loaded: LoadedModel, x_t: Tensor, t: int, settings: FusionSettings,
                 generator: torch.Generator | None = None) -> Tensor:
    """Run the chosen sampler from timestep t (not T - 1) down to a clean image."""
    sampler = settings.resolved_sampler
    # It cannot visit more timesteps than t..0 (DDPM's default, all of them, is exactly those).
    steps = min(sampler_steps(sampler, settings.steps, loaded.schedule.timesteps), t + 1)
    return run_sampler(loaded, x_t, sampler, steps, settings.eta, settings.spacing, generator=generator,
                       clip=settings.clip, start_step=t)


def slerp_timesteps(loaded: LoadedModel, settings: FusionSettings) -> list[int]:
    """The DDIM timesteps that ddim-slerp inverts over and decodes over: the same for both."""
    return sampler_timesteps("ddim", settings.steps, loaded.schedule.timesteps, settings.spacing)


def invert_and_slerp(loaded: LoadedModel, images_a: Tensor, images_b: Tensor, lams: Tensor,
                     settings: FusionSettings, timesteps: list[int] | None = None) -> Tensor:
    """DDIM-invert both sets of images over `timesteps` (default: slerp_timesteps), then
    interpolate the latents spherically."""
    timesteps = slerp_timesteps(loaded, settings) if timesteps is None else timesteps
    latents = invert_ddim(loaded.denoiser(settings.clip), torch.cat([images_a, images_b]), loaded.schedule,
                          timesteps)
    latent_a, latent_b = latents[: len(images_a)], latents[len(images_a):]
    size = max(len(images_a), len(lams))
    return slerp(latent_a.expand(size, -1, -1, -1), latent_b.expand(size, -1, -1, -1), lams.to(latents.device))


def fuse(loaded: LoadedModel, images_a: Tensor, images_b: Tensor, lams: Tensor, settings: FusionSettings,
         generator: torch.Generator | None = None) -> Tensor:
    """Fused images in [-1, 1]: one per lambda, where images_a/images_b hold one image
    (a strip over several lambdas) or one per lambda (a batch of pairs)."""
    settings.check()
    lams = torch.as_tensor(lams, dtype=torch.float32).reshape(-1)
    if ((lams < 0) | (lams > 1)).any():
        raise ConfigError(f"{{option:lam}}/{{option}} must lie between 0 and 1; got {lams.tolist()}", option="lams")
    timesteps = loaded.schedule.timesteps
    if settings.t is not None and not 0 <= settings.t < timesteps:
        raise ConfigError(f"{{option}} must be between 0 and {timesteps - 1} (the model's last timestep); "
                          f"got {settings.t}", option="t")
    with torch.inference_mode(), autocast_for(loaded.device, settings.precision):
        if settings.method == "ddim-slerp":
            sequence = slerp_timesteps(loaded, settings)
            latents = invert_and_slerp(loaded, images_a, images_b, lams, settings, sequence)
            return sample_ddim(loaded.denoiser(settings.clip), latents, loaded.schedule, sequence)
        t = timesteps // 2 if settings.t is None else settings.t
        x_t = mix_noisy(loaded, images_a, images_b, lams, t, settings.noise, generator)
        return denoise_from(loaded, x_t, t, settings, generator)
