"""The DDPM-versus-DDIM study: the same seeds through several sampler settings, timed.

Every row starts from the same noise (generate_images seeds each batch by its first
index), so rows differ only in the sampler. The clock covers sampling alone: one
untimed warm-up batch runs first (CUDA context, cuDNN autotuning, autocast caches), and
writing files and computing metrics are outside the timed region. On CUDA the device
is synchronised before each reading, so queued kernels are not missed.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from difflab.errors import ConfigError
from difflab.generation import LoadedModel, autocast_for, prepare_output_folder, run_sampler, write_numbered_images
from difflab.samplers import SAMPLERS, get_sampler

SPEC_HELP = "comma-separated SAMPLER[:STEPS][:eta=ETA], e.g. ddpm:1000,ddim:100,ddim:50:eta=1,dpmpp-2m:20"
TIMING_NOTE = ("sampling time only: one warm-up batch is excluded, as are writing files and computing "
               "metrics; CUDA is synchronised before each reading")
PREVIEW_IMAGES = 8  # per row, for the side-by-side figure of the same seeds


@dataclass(frozen=True)
class SamplerSpec:
    """One row of the study: a sampler, its number of steps and (DDIM) its eta. A model family
    other than diffusion names its own setting in `sampler` (e.g. "stylegan2") and passes its
    own sampling keywords in `options` (e.g. the truncation psi); `steps` is the network
    evaluations per image."""

    sampler: str
    steps: int
    eta: float = 0.0
    options: tuple[tuple[str, Any], ...] = ()  # generate() keywords of another family
    name: str = ""  # overrides the label (another family's setting)

    @property
    def label(self) -> str:
        return self.name or f"{self.sampler}:{self.steps}" + (f":eta={self.eta:g}" if self.eta else "")

    @property
    def folder_name(self) -> str:
        if self.name:
            return re.sub(r"[^A-Za-z0-9.-]+", "-", self.name).strip("-")
        return f"{self.sampler}-{self.steps}" + (f"-eta{self.eta:g}" if self.eta else "")

    def generate_options(self) -> dict[str, Any]:
        """Keywords for ImageGenerator.generate()."""
        if self.options:
            return dict(self.options)
        return {"sampler": self.sampler, "steps": self.steps, "eta": self.eta}


def spec_pattern() -> re.Pattern:
    """SAMPLER[:STEPS][:eta=ETA] over the registered samplers."""
    names = "|".join(map(re.escape, sorted(SAMPLERS, key=len, reverse=True)))
    return re.compile(rf"^({names})(?::(\d+))?(?::eta=([0-9.]+))?$")


def parse_sampler_specs(text: str, timesteps: int) -> list[SamplerSpec]:
    """`--samplers ddpm:1000,ddim:50,...` -> specs; a sampler without STEPS takes its default
    (DDPM: all T timesteps of the model)."""
    specs, pattern = [], spec_pattern()
    for item in (part.strip() for part in text.split(",") if part.strip()):
        match = pattern.match(item)
        if not match:
            raise ConfigError(f"{{option}}: cannot read {item!r}; expected {SPEC_HELP}", option="samplers")
        entry = get_sampler(match.group(1))
        steps = entry.steps_for(timesteps, None if match.group(2) is None else int(match.group(2)))
        eta = float(match.group(3) or 0)
        if not 1 <= steps <= timesteps:
            raise ConfigError(f"{{option}}: {item!r}: {entry.name} steps must be between 1 and the model's "
                              f"{timesteps} timesteps", option="samplers")
        if eta and entry.eta is None:
            raise ConfigError(f"{{option}}: {item!r}: {entry.name} has no eta (it is {entry.noise or 'fixed'})",
                              option="samplers")
        specs.append(SamplerSpec(entry.name, steps, eta))
    if not specs:
        raise ConfigError(f"{{option}} is empty; expected {SPEC_HELP}", option="samplers")
    if len({spec.label for spec in specs}) != len(specs):
        raise ConfigError(f"{{option}} lists a setting twice: {text}", option="samplers")
    return specs


@dataclass
class StudyRow:
    spec: SamplerSpec
    num_images: int
    seconds: float
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the family, when the study compares several runs
    run: str | None = None

    @property
    def network_evaluations(self) -> int:
        """One network pass per step per image, for DDIM as for DDPM."""
        return self.spec.steps * self.num_images

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(batches: Iterator[Any], device: torch.device) -> Iterator[tuple[float, Any]]:
    """Each item of `batches` with the seconds spent producing it (not consuming it)."""
    while True:
        synchronize(device)
        started = time.perf_counter()
        try:
            item = next(batches)
        except StopIteration:
            return
        synchronize(device)
        yield time.perf_counter() - started, item


def warm_up(loaded, batch_size: int, precision: str) -> float:
    """An untimed full batch of the model's cheapest setting, so one-off start-up costs stay out
    of the rows (a generator's own `warm_up`)."""
    synchronize(loaded.device)
    started = time.perf_counter()
    loaded.warm_up(batch_size, precision)
    synchronize(loaded.device)
    return time.perf_counter() - started


def warm_up_diffusion(loaded: LoadedModel, batch_size: int, precision: str) -> None:
    """Two steps of the default sampler on a full batch."""
    noise = torch.randn(batch_size, *loaded.image_shape(), device=loaded.device)
    with torch.inference_mode(), autocast_for(loaded.device, precision):
        run_sampler(loaded, noise, steps=2)


@dataclass(frozen=True)
class GenerationSettings:
    """What every row shares, so that only the sampler differs between rows."""

    num_images: int
    batch_size: int = 250
    seed: int = 0
    precision: str = "no"
    spacing: str = "uniform"
    clip: str | None = None
    image_format: str = "png"
    overwrite: bool = False
    progress: bool = True


def generate_row(loaded, spec: SamplerSpec, settings: GenerationSettings,
                 folder: Path) -> tuple[StudyRow, torch.Tensor]:
    """Write the row's numbered images to `folder`; the row (with its sampling time) and the
    first few images for the side-by-side figure."""
    prepare_output_folder(folder, settings.num_images, settings.image_format, settings.overwrite)
    family_options = {"spacing": settings.spacing, "clip": settings.clip} if not spec.options else {}
    batches = loaded.generate(settings.num_images, settings.batch_size, settings.seed, settings.precision,
                              **spec.generate_options(), **family_options)
    seconds, preview = 0.0, []
    with tqdm(total=settings.num_images, desc=f"sampling {spec.label}", unit="img",
              disable=not settings.progress) as bar:
        for batch_seconds, (first, images) in timed(batches, loaded.device):
            seconds += batch_seconds
            write_numbered_images(folder, first, images, settings.image_format)
            preview.extend(images[: max(0, PREVIEW_IMAGES - len(preview))])
            bar.update(len(images))
    return StudyRow(spec, settings.num_images, seconds, folder), torch.stack(preview)


def baseline_row(rows: list[StudyRow]) -> StudyRow:
    """What speed-ups are relative to: the first row of the reference sampler (the registry's; DDPM,
    as DDPM-1000 in the homework), else the first row."""
    def is_reference(row: StudyRow) -> bool:
        entry = SAMPLERS.get(row.spec.sampler)
        return entry is not None and entry.reference
    return next((row for row in rows if is_reference(row)), rows[0])
