"""The training configuration: one dataclass whose fields are the `difflab train` options.

Every field becomes a command-line flag (`image_size` -> `--image-size`) and a key of
a TOML/YAML config file; the resolved configuration is saved with every checkpoint,
so sampling needs nothing but the run folder. Units are in the names (`_steps`,
`_minutes`, `_degrees`), as in EDM's training options.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difflab.errors import ConfigError


def option(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    # Data
    data: str = option("", "image folder, .zip archive, or a built-in dataset (mnist, cifar10, shapes)")
    data_root: str = option("", "where built-in datasets are read from (mnist: the folder of IDX .gz files)")
    image_size: int = option(64, "images are resized (shorter side) and centre-cropped to this many pixels")
    image_channels: str = option("auto", "1 (grayscale), 3 (RGB) or auto (detected from the data)", ("auto", "1", "3"))
    hflip: bool = option(True, "random horizontal flips")
    rotate_degrees: float = option(0.0, "random rotation up to this many degrees (0 = off)")
    jitter: float = option(0.0, "random brightness/contrast jitter strength, e.g. 0.1 (0 = off)")
    max_images: int = option(0, "use at most this many images (0 = all)")
    # Network
    channels: int = option(64, "U-Net base width (channels of the first level)")
    dim_mults: str = option("1,2,4", "width multiplier per U-Net level; levels - 1 downsamplings")
    res_blocks: int = option(2, "residual blocks per U-Net level")
    attn_resolutions: str = option("16", "feature-map sizes that get self-attention, e.g. 16,8 ('' = none)")
    attn_head_channels: int = option(64, "channels per self-attention head (widths above it must be multiples)")
    dropout: float = option(0.0, "dropout in the residual blocks")
    # Diffusion
    timesteps: int = option(1000, "number of diffusion steps T")
    beta_schedule: str = option("cosine", "noise schedule", ("linear", "cosine", "sigmoid"))
    objective: str = option("pred_v", "what the network predicts", ("pred_noise", "pred_x0", "pred_v"))
    loss_weighting: str = option("min_snr", "per-timestep loss weighting", ("none", "min_snr"))
    min_snr_gamma: float = option(5.0, "gamma of min-SNR weighting")
    clip: str = option("static", "clipping of the predicted clean image when sampling", ("static", "dynamic", "none"))
    # Optimisation
    batch_size: int = option(64, "images per optimisation step, over all processes")
    steps: int = option(20000, "optimisation steps to train for")
    max_minutes: float = option(0.0, "stop after this many minutes of training, saving a checkpoint (0 = no limit)")
    lr: float = option(2e-4, "peak learning rate of AdamW")
    warmup_steps: int = option(200, "linear learning-rate warm-up")
    lr_decay: str = option("none", "after warm-up: keep --lr (none), or decay it to zero at the end of the budget "
                           "(--steps, or --max-minutes when that comes first)", ("none", "cosine", "linear"))
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_beta2: float = option(0.99, "AdamW beta2")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)")
    grad_accum: int = option(1, "gradient accumulation: micro-batches per optimisation step")
    mixed_precision: str = option("auto", "autocast precision; auto = bf16 on GPUs that support it, else no",
                                  ("auto", "no", "fp16", "bf16"))
    ema_decay: float = option(0.999, "decay of the exponential moving average of the weights used for sampling")
    ema_every: int = option(1, "update the EMA every this many steps")
    ema_warmup_steps: int = option(100, "0 = off; any other value switches on the EMA warm-up, decay = "
                                        "min(decay, (1 + n) / (10 + n)) at update n, so --ema-decay 0.995 takes "
                                        "effect only after ~1,800 updates (the value itself is not a step count)")
    seed: int = option(0, "seed for initialisation, data order, noise and augmentation")
    # Speed
    compile: str = option("auto", "torch.compile the network: on, off, or auto (on for CUDA when the run is planned "
                          "for >= 2000 steps and >= 3 minutes: compiling takes ~80 s on an H100, then a step is "
                          "~2.7x faster); falls back to eager if the compiler is unavailable", ("auto", "on", "off"))
    cuda_graphs: str = option("auto", "record the network's forward and backward as CUDA graphs on one GPU: auto = "
                              "with --compile (its reduce-overhead mode); on = also without it (the compiler's "
                              "cudagraphs backend; measured no faster for eager kernels); off", ("auto", "on", "off"))
    channels_last: bool = option(False, "channels-last memory layout on GPU. Off by default: eager bf16 passes ran "
                                 "slower with it on an H100 (benchmarks/profile_gpu.py)")
    workers: int = option(-1, "data-loading worker processes (-1 = automatic)")
    # Output
    out: str = option("", "run folder: checkpoints, sample grids, metrics log and loss curve")
    save_every: int = option(2000, "write a checkpoint and a sample grid every this many steps")
    keep_checkpoints: int = option(3, "keep this many most recent checkpoints")
    grid_images: int = option(64, "images in each sample grid")
    grid_sampler_steps: int = option(50, "DDIM steps for the sample grids")
    log_every: int = option(50, "append to metrics.jsonl every this many steps")

    # ---- derived views --------------------------------------------------------------------------
    def dim_mults_tuple(self) -> tuple[int, ...]:
        return parse_int_tuple(self.dim_mults, "--dim-mults", allow_empty=False)

    def attn_resolutions_tuple(self) -> tuple[int, ...]:
        return parse_int_tuple(self.attn_resolutions, "--attn-resolutions", allow_empty=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration") -> "TrainConfig":
        return cls(**coerce_options(values, source))

    def validate(self) -> "TrainConfig":
        """Check every option before any work; ConfigError names the offending option."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and str(value) not in choices:
                raise ConfigError(f"{flag_name(f.name)} must be one of {', '.join(choices)}; got {value!r}")
        positive = ["image_size", "channels", "attn_head_channels", "res_blocks", "timesteps", "batch_size", "steps", "save_every",
                    "grad_accum", "ema_every", "keep_checkpoints", "grid_sampler_steps", "log_every"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{flag_name(name)} must be positive; got {getattr(self, name)}")
        non_negative = ["max_minutes", "warmup_steps", "weight_decay", "grad_clip", "rotate_degrees", "jitter",
                        "max_images", "ema_warmup_steps", "grid_images"]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag_name(name)} must be >= 0; got {getattr(self, name)}")
        ranges = {"lr": (0, 1), "ema_decay": (0, 1), "adam_beta2": (0, 1), "dropout": (0, 1), "jitter": (0, 1)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not (low <= value < high) or (name == "lr" and value == 0):
                raise ConfigError(f"{flag_name(name)} must be in [{low}, {high}); got {value}")
        if self.timesteps < 2:
            raise ConfigError(f"--timesteps must be >= 2; got {self.timesteps}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"--batch-size ({self.batch_size}) must be divisible by --grad-accum ({self.grad_accum})")
        if not self.data:
            raise ConfigError("no data given: pass an image folder, a .zip archive or a built-in name (mnist, cifar10, shapes)")
        if not self.out:
            raise ConfigError("--out is required: the run folder for checkpoints and samples")
        self.dim_mults_tuple()
        self.attn_resolutions_tuple()
        return self


def coerce_options(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Option names (dashes or underscores) and values from a file or the command line,
    checked against TrainConfig's fields and converted to their types."""
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    coerced = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{source}: unknown option {key!r}; run `difflab train --help` for the options")
        coerced[name] = _coerce(known[name], value, source)
    return coerced


def parse_int_tuple(text: str, option: str, allow_empty: bool) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4), with an error naming the option for anything else."""
    parts = [p.strip() for p in str(text).replace(" ", "").split(",")] if str(text).strip() else []
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated positive integers like 1,2,4; got {text!r}") from None
    if (not values and not allow_empty) or any(v <= 0 for v in values):
        raise ConfigError(f"{option} must be comma-separated positive integers like 1,2,4; got {text!r}")
    return values


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Config-file values to the field's type ('1,2,4' or [1, 2, 4] for tuples-as-strings)."""
    kind = type(f.default)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is str and isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        if kind is float and isinstance(value, int):
            return float(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {flag_name(f.name)} expects a {kind.__name__}; got {value!r}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file of options; a [train] table is also accepted."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        values = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml
        values = yaml.safe_load(text) or {}
    else:
        raise ConfigError(f"--config must be a .toml, .yaml or .yml file; got {str(path)!r}")
    if not isinstance(values, dict):
        raise ConfigError(f"--config: {path} must hold a table of options")
    return values.get("train", values)
