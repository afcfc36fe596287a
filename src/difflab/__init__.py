"""difflab: train, sample and evaluate image diffusion models on a folder of your own images.

The public Python API (docs/api.md) is importable from here; each name is imported on first use,
so `import difflab` stays cheap (no torch until a name that needs it is touched):

    import difflab
    config = difflab.TrainConfig.from_dict({"data": "shapes", "image_size": 32, "out": "runs/x"}).validate()
    difflab.train(config)
    loaded = difflab.load_model("runs/x")
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # configuration and training
    "TrainConfig": "difflab.config",
    "train": "difflab.training",
    "TrainResult": "difflab.training",
    # loading and sampling
    "load_model": "difflab.generation",
    "LoadedModel": "difflab.generation",
    "generate_images": "difflab.generation",
    "run_sampler": "difflab.generation",
    "write_numbered_images": "difflab.generation",
    "sample_ddpm": "difflab.samplers",
    "sample_ddim": "difflab.samplers",
    "sample_dpm_solver": "difflab.samplers",
    # the network and the diffusion process
    "UNet": "difflab.network",
    "UNetConfig": "difflab.network",
    "DiffusionSchedule": "difflab.diffusion",
    "make_beta_schedule": "difflab.diffusion",
    # scoring
    "load_extractor": "difflab.metrics.extractors",
    "measure": "difflab.metrics.evaluation",
    "statistics_of": "difflab.metrics.evaluation",
    "FeatureStatistics": "difflab.metrics.statistics",
    "frechet_distance": "difflab.metrics.frechet",
    "kernel_distance": "difflab.metrics.kid",
    # export
    "export_diffusers": "difflab.export",
    "export_onnx": "difflab.export",
    # errors with a message meant for the user
    "ConfigError": "difflab.errors",
    "DataError": "difflab.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'difflab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see (the package ships py.typed)
    from difflab.config import TrainConfig
    from difflab.diffusion import DiffusionSchedule, make_beta_schedule
    from difflab.errors import ConfigError, DataError
    from difflab.export import export_diffusers, export_onnx
    from difflab.generation import LoadedModel, generate_images, load_model, run_sampler, write_numbered_images
    from difflab.metrics.evaluation import measure, statistics_of
    from difflab.metrics.extractors import load_extractor
    from difflab.metrics.frechet import frechet_distance
    from difflab.metrics.kid import kernel_distance
    from difflab.metrics.statistics import FeatureStatistics
    from difflab.network import UNet, UNetConfig
    from difflab.samplers import sample_ddim, sample_ddpm, sample_dpm_solver
    from difflab.training import TrainResult, train
