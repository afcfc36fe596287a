"""Feature extractors: the FID Inception, or any network the user names as FILE.py:FUNCTION.

A distance is only called FID when it was measured with the published FID Inception
weights; in any other feature space it is an FD, labelled with the extractor's name,
so that numbers from different spaces are never mixed up.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from difflab.errors import OPTION, ConfigError
from difflab.metrics.inception import FID_WEIGHTS, load_fid_inception

INCEPTION = "inception"
INCEPTION_NAME = "inception-v3-fid"  # pytorch-fid's pool_3 features, 2048-d


@runtime_checkable
class FeatureNetwork(Protocol):
    """What `--features FILE.py:FUNCTION` must return: images in [0, 1], (N, C, H, W) -> (N, D)."""

    def features(self, images: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Extractor:
    """A feature network with the name results are labelled with."""

    name: str
    network: FeatureNetwork
    identity: str  # changes whenever the features could change; keys the statistics cache

    @property
    def is_fid_inception(self) -> bool:
        return self.name == INCEPTION_NAME

    @property
    def distance_name(self) -> str:
        """"FID" only for the FID Inception; "FD" (Frechet distance) in any other space."""
        return "FID" if self.is_fid_inception else "FD"


def load_extractor(
    spec: str = INCEPTION,
    device: torch.device | str = "cpu",
    inception_weights: str | os.PathLike | None = None,
    option: str = "features",
) -> Extractor:
    """Resolve `--features`: "inception" or "FILE.py:FUNCTION"; the network is moved to `device`.
    `option` is the option that errors name (`--eval-features` during training)."""
    if spec == INCEPTION:
        network = load_fid_inception(inception_weights)
        return Extractor(INCEPTION_NAME, network.to(device), identity=f"{INCEPTION_NAME}:{FID_WEIGHTS.sha256}")
    path, function_name = _split_spec(spec, option)
    network = _call_factory(path, function_name, option)
    if isinstance(network, torch.nn.Module):
        network = network.eval().requires_grad_(False).to(device)
    source_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    name = f"{path.name}:{function_name}"
    return Extractor(name, network, identity=f"{name}:{source_hash}")


def check_extractor_spec(spec: str, option: str = "features") -> None:
    """A ConfigError naming `option` now, before any work, for a FILE.py:FUNCTION that cannot be found."""
    if spec != INCEPTION:
        _split_spec(spec, option)


def _split_spec(spec: str, option: str = "features") -> tuple[Path, str]:
    file_part, _, function_name = spec.rpartition(":")
    if not file_part.endswith(".py") or not function_name.isidentifier():
        raise ConfigError(f"{OPTION} must be 'inception' or FILE.py:FUNCTION, got {spec!r}", option=option)
    path = Path(file_part).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{OPTION} {spec!r}: {path} does not exist", option=option)
    return path, function_name


def _call_factory(path: Path, function_name: str, option: str = "features") -> FeatureNetwork:
    """Import the file as a module of its own and call FUNCTION() to get the network."""
    module_name = f"difflab_user_features_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"{OPTION}: {path} has a syntax error on line {error.lineno}: {error.msg}",
                          option=option) from None
    except Exception as error:  # the user's code: whatever it raises is a message, not a traceback
        sys.modules.pop(module_name, None)
        raise ConfigError(f"{OPTION}: importing {path} failed: {_describe(error)}", option=option) from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ConfigError(f"{OPTION}: {path.name} defines no function {function_name!r}", option=option)
    try:
        network = factory()
    except Exception as error:
        raise ConfigError(f"{OPTION}: {path.name}:{function_name}() failed: {_describe(error)}",
                          option=option) from None
    if not isinstance(network, FeatureNetwork):
        raise ConfigError(
            f"{OPTION}: {path.name}:{function_name}() returned a {type(network).__name__}, "
            "which has no features(images) method", option=option
        )
    return network


def _describe(error: BaseException) -> str:
    """`TypeName: message (file:line)` of the innermost frame of the user's code."""
    import traceback
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"
