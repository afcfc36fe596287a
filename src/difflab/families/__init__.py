"""Model families: the registry, the run configuration of each, and the one checkpoint loader.

Adding a family is one module that defines a `Family` (base.py says what it provides) and one
line in FAMILIES. The training loop, `sample`, `eval` and `compare` go through the functions here
and never branch on a family's name.
"""
from __future__ import annotations

import dataclasses
import importlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from difflab.config import Options, RunOptions, TrainConfig, coerce_options
from difflab.errors import OPTION, ConfigError, DataError
from difflab.families.base import Family, FamilyTrainer, ImageGenerator, StepContext

# name -> module defining FAMILY. The registry: one line per family.
FAMILIES = {
    "diffusion": "difflab.families.diffusion",
    "stylegan2": "difflab.families.stylegan2",  # noqa: E241
    "denoiser": "difflab.families.denoiser",  # noqa: E241
}
DEFAULT_FAMILY = "diffusion"  # runs written before families existed have no "model" option


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"{OPTION} must be one of {', '.join(FAMILIES)}; got {name!r}", option="model")
    return importlib.import_module(FAMILIES[name]).FAMILY


@lru_cache(maxsize=None)
def config_class(name: str) -> type:
    """The dataclass of a `--model NAME` run: RunOptions plus the family's own options."""
    if name == DEFAULT_FAMILY:
        return TrainConfig
    family = get_family(name)
    model = next(f for f in dataclasses.fields(RunOptions) if f.name == "model")
    own_name = ("model", str, dataclasses.field(default=name, metadata=model.metadata))  # --model defaults to it
    return dataclasses.make_dataclass(f"{family.options.__name__}Config", [own_name],
                                      bases=(family.options, RunOptions),
                                      namespace={"__doc__": f"A {name} run's options."})


def family_options(name: str) -> set[str]:
    """Option names that only this family has (not RunOptions')."""
    run = {f.name for f in dataclasses.fields(RunOptions)}
    return {f.name for f in dataclasses.fields(config_class(name))} - run


def make_config(values: dict[str, Any], source: str = "configuration") -> Options:
    """The run configuration that `values` describe, as its family's dataclass. An option of
    another family fails with a message naming it and the family it belongs to."""
    name = str(values.get("model", DEFAULT_FAMILY))
    klass = config_class(get_family(name).name)
    known = {f.name for f in dataclasses.fields(klass)}
    for key in values:
        option = key.replace("-", "_")
        if option not in known:
            owners = [other for other in FAMILIES if other != name and option in family_options(other)]
            if owners:
                raise ConfigError(f"{source}: {OPTION} is an option of {{option:model}} {owners[0]}, "
                                  f"not of {{option:model}} {name}", option=option)
    return klass(**coerce_options(values, source, klass))


def checkpoint_family(config: dict[str, Any], meta: dict[str, Any]) -> str:
    return str(meta.get("family") or config.get("model") or DEFAULT_FAMILY)


def load_generator(path: str | Path, device: str | torch.device | None = None, weights: str = "ema") -> ImageGenerator:
    """The trained model under `path` (a run folder or a checkpoint file), whatever its family:
    reads the checkpoint's `family` field and hands it to that family's loader. No code from the
    file is executed (safetensors). `weights`: ema, model, or best (the EMA weights of the
    checkpoint that scored best during training, kept by --keep-best)."""
    from difflab.training.checkpoint import load_checkpoint
    from difflab.generation.model_io import default_device

    device = torch.device(device) if device else default_device()
    if weights == "best":  # the EMA weights of the best-scoring checkpoint (train --keep-best)
        from difflab.training.monitor import best_checkpoint_folder
        path, weights = best_checkpoint_folder(path), "ema"
    checkpoint = load_checkpoint(path, groups=())  # metadata only: which family, which groups
    family = get_family(checkpoint_family(checkpoint.config, checkpoint.meta))
    if weights not in family.weights:
        raise ConfigError(f"{OPTION} must be one of {', '.join(family.weights)} for a {family.name} run; "
                          f"got {weights!r}", option="weights")
    return family.load_generator(checkpoint.path, device, weights)


def require_family(generator: ImageGenerator, name: str, command: str, hint: str = "") -> None:
    """For the commands that only make sense for one family (progressive generation, fusion by
    noising and denoising): a clear message instead of a failure deep inside."""
    if generator.family != name:
        raise DataError(f"{command} works on {name} runs; {generator.checkpoint} is a {generator.family} run"
                        + (f". {hint}" if hint else ""))


__all__ = ["DEFAULT_FAMILY", "FAMILIES", "Family", "FamilyTrainer", "ImageGenerator", "StepContext",
           "checkpoint_family", "config_class", "family_options", "get_family", "load_generator", "make_config",
           "require_family"]
