"""The contract between the shared run core (training/loop.py, generation/, the CLI) and a model
family (diffusion, StyleGAN2, the one-step denoiser).

The core owns what every run has: devices and processes, data and augmentation, step and time
budgets, checkpoints and exact resume, the metrics log, preview grids, progress. A family owns its
networks, optimisers, losses and the optimisation step. It plugs in with one module that defines a
`Family` and one line in `difflab.families.FAMILIES`; nothing in the core branches on its name.

Two objects per family:
- a `FamilyTrainer`, built from the run's options, that the training loop drives without knowing
  what it trains (after EDM's training_loop.py, which builds network, loss and optimiser from
  keyword arguments);
- a `ImageGenerator`, rebuilt from a checkpoint, that `sample`, `eval` and `compare` use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Protocol

import torch
from torch import Tensor


@dataclass
class StepContext:
    """What the core tells a family about the step it is about to take."""
    step: int  # optimisation steps already taken (the new step's index)
    run_seconds: float  # training seconds of this invocation so far (for time-budgeted schedules)
    generator: torch.Generator  # seeded by (seed, step, rank): the step's only source of randomness
    autocast: Callable[[], Any]  # the run's autocast context
    backward: Callable[[Tensor], None]  # accelerator.backward
    no_sync: Callable[[torch.nn.Module], Any]  # accelerator.no_sync, for accumulation
    clip_grad_norm: Callable[[Any, float], Any]  # accelerator.clip_grad_norm_


class FamilyTrainer(Protocol):
    """One model family's networks, optimisers and losses, driven by the shared loop."""

    def prepare(self, prepare: Callable[..., Any], example_images: Tensor, compile: bool,
                cuda_graphs: bool) -> str | None:
        """Wrap networks and optimisers for the devices (`prepare` is accelerator.prepare) and
        compile (`compile`, `cuda_graphs`: the core's decision from --compile/--cuda-graphs) with
        `example_images`, one micro-batch of zeros. Called under the run's autocast. Returns what
        it compiled, for the log (e.g. "whole, CUDA graphs"), or None where everything stays eager
        (a family may decline the core's decision)."""

    def train_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor]:
        """One optimisation step on `images` (this process's share of the global batch, in
        [-1, 1]); returns detached scalar tensors to log, e.g. {"loss": ...}. No host syncs."""

    def log_state(self) -> dict[str, float]:
        """Values logged as they are at each log interval (the learning rate, ADA's p)."""

    def after_log(self, averages: dict[str, float], step: int) -> str | None:
        """Called at each log interval with the interval's mean of every logged value. Returns a
        reason to stop (divergence, collapse) or None. Families adapt state here (ADA's p)."""

    def state(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        """Everything to resume exactly: tensor groups (group -> name -> tensor) and JSON."""

    def load_state(self, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any]) -> None:
        """Restore what `state()` returned."""

    def preview(self, count: int, seed: int, steps: int | None = None, sampler: str | None = None) -> Tensor:
        """`count` images in [-1, 1] from the weights that samples are drawn from (EMA), for the
        run's sample grids and the quality monitor; the same `seed` gives the same latent inputs at
        every save. `steps` and `sampler` (a `samplers.SAMPLERS` name), for families that have them
        (None: the grids', DDIM).
        Called under torch.no_grad() and the run's autocast."""


class ImageGenerator(Protocol):
    """A trained model that makes images, whatever its family."""

    family: str
    step: int
    checkpoint: Path
    config: Any

    @property
    def device(self) -> torch.device: ...

    def image_shape(self) -> tuple[int, int, int]: ...

    def generate(self, count: int, batch_size: int = 250, seed: int = 0, precision: str = "no",
                 **sampling: Any) -> Iterator[tuple[int, Tensor]]:
        """Yield (index of the batch's first image, uint8 images (B, C, H, W) on the CPU) until
        `count` images are made; each batch is seeded by (seed, first index)."""

    def describe(self, **sampling: Any) -> str:
        """A short label for tables and manifests, e.g. "DDIM-50" or "StyleGAN2, psi 1"."""


@dataclass(frozen=True)
class Family:
    """A registry entry: how to build a family's options, trainer and generator."""
    name: str
    help: str
    options: type  # the dataclass of the family's own options (with RunOptions' fields)
    trainer: Callable[..., FamilyTrainer]  # trainer(config, image_channels, device) -> FamilyTrainer
    load_generator: Callable[..., ImageGenerator]  # load_generator(checkpoint, device, weights) -> ImageGenerator
    weights: tuple[str, ...] = ("ema", "model")  # what `--weights` may name
    check: Callable[[Any], None] = lambda config: None  # option checks that run before any data is read
    # what a run of this family is as a warm-start prior (generation/warm_start.py): "denoiser" (passes
    # from noise), "gan" (one sample), or None (not a prior)
    prior_kind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    FAMILY_KEY: ClassVar[str] = "family"
