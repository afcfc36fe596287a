"""The course report's failed variant, the denoiser inside training, in its reading (a): the diffusion
network sees a frozen, trained one-step denoiser's output instead of x_t,

    prediction = net(clamp(D(x_t), -1, 1), t)

with D a `--model denoiser` run (families/denoiser.py), in training and in sampling alike
(`difflab train ... --input-denoiser RUN`). D is a fixed function: eval mode, no gradients, not in
the optimiser; the EMA keeps it exactly (lerp(a, a, w) = a). The run's checkpoints hold D's weights
(in the network's `model` and `ema` groups, as `denoiser.*`) and D's configuration (the meta entry
`input_denoiser`), so `difflab sample` rebuilds the whole network without the denoiser run.
docs/concepts.md, section 10, says why it should not help, and what it measured.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.errors import OPTION, ConfigError, DataError
from difflab.families.denoiser import build_denoiser_network, denoise

INPUT_DENOISER = "input_denoiser"  # the option, and the checkpoint meta entry that records D


class DenoisedInput(nn.Module):
    """net(clamp(D(x), -1, 1), t): the network `net` given the frozen denoiser D's estimate instead of x."""

    def __init__(self, net: nn.Module, denoiser: nn.Module):
        super().__init__()
        self.net, self.denoiser = net, denoiser.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "DenoisedInput":
        super().train(mode)
        self.denoiser.eval()  # a fixed function: its dropout, if any, stays off
        return self

    def compile_regions(self) -> list[nn.Module]:
        """--compile-scope blocks: the trained network's repeated blocks; D, a fixed function, stays eager."""
        return list(self.net.compile_regions())

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(denoise(self.denoiser, x).clamp(-1, 1), t)  # D's output dtype kept (autocast, bf16 copies)


def check_input_denoiser(config: Any, image_channels: int | None = None) -> None:
    """The checks of --input-denoiser that read no weights, each a ConfigError naming it: the run or
    checkpoint exists, is a denoiser run, and its images have the diffusion run's size and channels
    (`image_channels` once the data is read, else the run's --image-channels unless auto)."""
    source = getattr(config, INPUT_DENOISER, "")
    if not source:
        return
    from difflab.families import checkpoint_family
    from difflab.generation.warm_start import shape_label
    from difflab.training.checkpoint import load_checkpoint
    if not Path(source).exists():
        raise ConfigError(f"{OPTION}: no such run folder or checkpoint {source!r}", option=INPUT_DENOISER)
    try:
        checkpoint = load_checkpoint(source, groups=())
    except DataError as error:
        raise ConfigError(f"{OPTION}: {error}", option=INPUT_DENOISER) from None
    family = checkpoint_family(checkpoint.config, checkpoint.meta)
    if family != "denoiser":
        raise ConfigError(f"{OPTION} must be a {{option:model}} denoiser run; {source} is a {family} run",
                          option=INPUT_DENOISER)
    if image_channels is None and str(config.image_channels) != "auto":
        image_channels = int(config.image_channels)
    theirs = (checkpoint.meta.get("image_channels"), checkpoint.config.get("image_size"))
    if theirs[1] != config.image_size or image_channels not in (None, theirs[0]):
        ours = (image_channels or theirs[0], config.image_size)
        raise ConfigError(f"{OPTION}: {source} denoises images of {shape_label((theirs[0], theirs[1], theirs[1]))}; "
                          f"this run's are {shape_label((ours[0], ours[1], ours[1]))}", option=INPUT_DENOISER)


def load_input_denoiser(config: Any, image_channels: int) -> tuple[nn.Module | None, dict | None]:
    """(D with its EMA weights, the record the checkpoints keep: D's configuration, channels, source and
    step); (None, None) without --input-denoiser. Checked first (check_input_denoiser)."""
    if not getattr(config, INPUT_DENOISER, ""):
        return None, None
    check_input_denoiser(config, image_channels)
    from difflab.families.denoiser import load_denoiser_generator
    generator = load_denoiser_generator(config.input_denoiser, torch.device("cpu"), "ema")
    record = {"source": str(config.input_denoiser), "checkpoint": str(generator.checkpoint), "step": generator.step,
              "config": generator.config.to_dict(), "image_channels": generator.image_channels}
    return generator.network, record


def with_input_denoiser(net: nn.Module, record: Any, image_channels: int) -> DenoisedInput:
    """`net` wrapped with a denoiser built (not loaded: the caller loads the weights) from `record`, the
    meta entry of a checkpoint; a DataError if the checkpoint lacks it or it does not fit."""
    from difflab.families import make_config
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise DataError("the checkpoint's configuration names an input denoiser, but its metadata holds no record "
                        f"of that denoiser ({INPUT_DENOISER!r}); it is incomplete or from another program")
    if record.get("image_channels") != image_channels:
        raise DataError(f"the checkpoint's input denoiser takes {record.get('image_channels')} channel(s); its "
                        f"network takes {image_channels}")
    try:
        config = make_config(record["config"], source="the checkpoint's input denoiser configuration")
    except ConfigError as error:
        raise DataError(str(error)) from None
    return DenoisedInput(net, build_denoiser_network(config, image_channels))
