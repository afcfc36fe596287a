"""Options, declared once: each field of an option set is a `difflab train` flag (`image_size` ->
`--image-size`) and a key of a TOML/YAML config file, with its type (from its default), help,
choices or range. `RunOptions` are every run's (data, budgets, output, speed); each model family
adds its own set (`DiffusionOptions` here; the others in `difflab.families`). The resolved options
are saved with every checkpoint, so sampling needs nothing but the run folder. Units are in the
names (`_steps`, `_minutes`, `_degrees`), as in EDM's training options.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from difflab.diffusion.losses import LOSS_NORMS, LOSS_WEIGHTINGS
from difflab.diffusion.objectives import CLIPPING, OBJECTIVES
from difflab.diffusion.schedules import BETA_SCHEDULES
from difflab.errors import OPTION, ConfigError
from difflab.samplers.registry import sampler_names

AUTO = "auto"
"""The value of an option whose default follows other options (the U-Net's levels and attention
follow the image size); `Options.resolve()` replaces it by the value it stands for."""


def option(default: Any, help: str, choices: tuple | None = None, low: float | None = None,
           high: float | None = None, low_inclusive: bool = True, high_inclusive: bool = True) -> Any:
    """Declare an option once: its default (and so its type), help text, and the choices or the
    range [low, high] its value must lie in (open at an end whose `*_inclusive` is False).
    `validate()` checks all of them; the CLI turns each into a flag."""
    return field(default=default, metadata={"help": help, "choices": choices, "low": low, "high": high,
                                            "low_inclusive": low_inclusive, "high_inclusive": high_inclusive})


def declaration(name: str, options: type | None = None) -> dict:
    """The declared help, choices and range of option `name` (of `options`, default: TrainConfig):
    other modules check their values against it instead of declaring the range again."""
    for f in dataclasses.fields(options or TrainConfig):
        if f.name == name:
            return dict(f.metadata)
    raise KeyError(name)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_declared_range(name: str, value: Any, meta: dict) -> None:
    """The ConfigError for a value outside its option's declared choices or range."""
    choices = meta.get("choices")
    if choices and str(value) not in choices:
        raise ConfigError(f"{OPTION} must be one of {', '.join(choices)}; got {value!r}", option=name)
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return
    too_low = low is not None and (value < low if meta["low_inclusive"] else value <= low)
    too_high = high is not None and (value > high if meta["high_inclusive"] else value >= high)
    if not (too_low or too_high) and value == value:  # NaN fails every comparison
        return
    if high is None:
        raise ConfigError(f"{OPTION} must be {'positive' if low == 0 and not meta['low_inclusive'] else f'>= {low}'}"
                          f"; got {value}", option=name)
    left = "[" if meta["low_inclusive"] else "("
    right = "]" if meta["high_inclusive"] else ")"
    raise ConfigError(f"{OPTION} must be in {left}{low}, {high}{right}; got {value}", option=name)


LOGGERS = ("none", "tensorboard", "wandb")  # difflab.training.trackers
EVAL_METRICS = ("fd", "kid")  # difflab.training.monitor
POSITIVE = dict(low=0, low_inclusive=False)
NON_NEGATIVE = dict(low=0)
FRACTION = dict(low=0, high=1, high_inclusive=False)


class Options:
    """Methods shared by every option set (the run's and each family's)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "configuration"):
        return cls(**coerce_options(values, source, cls))

    def resolve(self):
        """Replace each `auto` option by the value it stands for (the diffusion U-Net's levels and
        attention, from the image size), so that the saved configuration spells out the network.
        An option given explicitly is kept. validate() does this too; repeating it changes nothing."""
        for klass in reversed(type(self).__mro__):
            hook = klass.__dict__.get("resolve_auto")
            if hook is not None:
                hook(self)
        return self

    def validate(self):
        """Check every option before any work (ConfigError names the offending option), after
        resolving the `auto` ones."""
        for f in dataclasses.fields(self):
            check_declared_range(f.name, getattr(self, f.name), f.metadata)
        self.resolve()
        for klass in type(self).__mro__:  # each option set's cross-option checks, run options first
            check = klass.__dict__.get("check")
            if check is not None:
                check(self)
        return self


@dataclass
class RunOptions(Options):
    """Options every run has, whatever model family it trains: data, budgets, output, speed."""
    model: str = option("diffusion", "model family to train (difflab.families.FAMILIES): diffusion, stylegan2, "
                        "denoiser")
    # Data
    data: str = option("", "image folder, .zip archive, or a built-in dataset (mnist, cifar10, shapes)")
    data_root: str = option("", "where built-in datasets are read from (mnist: the folder of IDX .gz files)")
    image_size: int = option(64, "images are resized (shorter side) and centre-cropped to this many pixels", **POSITIVE)
    image_channels: str = option("auto", "1 (grayscale), 3 (RGB) or auto (detected from the data)", ("auto", "1", "3"))
    hflip: bool = option(True, "random horizontal flips")
    rotate_degrees: float = option(0.0, "random rotation up to this many degrees (0 = off)", **NON_NEGATIVE)
    jitter: float = option(0.0, "random brightness/contrast jitter strength, e.g. 0.1 (0 = off)", **FRACTION)
    max_images: int = option(0, "use at most this many images (0 = all)", **NON_NEGATIVE)
    # Budget
    batch_size: int = option(64, "images per optimisation step, over all processes", **POSITIVE)
    steps: int = option(20000, "optimisation steps to train for", **POSITIVE)
    max_minutes: float = option(0.0, "stop after this many minutes of training, saving a checkpoint (0 = no limit)",
                                **NON_NEGATIVE)
    seed: int = option(0, "seed for initialisation, data order, noise and augmentation")
    # Speed
    mixed_precision: str = option("auto", "autocast precision; auto = bf16 on GPUs that support it and on CPUs "
                                  "with bf16 matrix instructions (AMX or AVX-512-BF16), else no",
                                  ("auto", "no", "fp16", "bf16"))
    compile: str = option("auto", "torch.compile the network: on, off, or auto (on for CUDA when the run is planned "
                          "for >= 2000 steps and >= 3 minutes: on an H200 compiling takes 86 s the first time, 12 s "
                          "from the --compile-cache after, then a step is ~3x faster); falls back to eager if the "
                          "compiler is unavailable", ("auto", "on", "off"))
    cuda_graphs: str = option("auto", "record the network's forward and backward as CUDA graphs on one GPU: auto = "
                              "with --compile (its reduce-overhead mode); on = also without it (the compiler's "
                              "cudagraphs backend; measured no faster for eager kernels); off", ("auto", "on", "off"))
    compile_scope: str = option("auto", "what --compile compiles: whole (the network as one graph), blocks (each "
                                "repeated U-Net block on its own, PyTorch's regional compilation: blocks of one shape "
                                "share a graph, the code between them runs eagerly; with --cuda-graphs each block is "
                                "graphed on its own), or auto (whole: on an H200 blocks compiled 1.23x as long and "
                                "its step was 1.4-1.5x slower, benchmarks/RESULTS.md issue 17)",
                                ("auto", "whole", "blocks"))
    compile_cache: str = option("auto", "where torch.compile keeps its on-disk caches (Inductor's FX-graph, "
                                "AOTAutograd and Triton caches), so that a later run of the same shapes compiles in "
                                "seconds: auto = $TORCHINDUCTOR_CACHE_DIR if set, else $XDG_CACHE_HOME/difflab/inductor "
                                "(~/.cache/difflab/inductor); a folder; or off (no cache read or written). difflab "
                                "sets TORCHINDUCTOR_CACHE_DIR only while it compiles, and only when it compiles; the "
                                "cache is never pruned")
    channels_last: bool = option(False, "channels-last memory layout on GPU. Off by default: eager bf16 passes ran "
                                 "slower with it on an H100 (benchmarks/profile_gpu.py); a compiled training step "
                                 "ran 0.95x as long on an H200, its quality not yet checked")
    cudnn_benchmark: bool = option(False, "let cuDNN time its convolution algorithms for the run's shapes on the first "
                                   "steps and keep the fastest (torch.backends.cudnn.benchmark; CUDA only). Off: a "
                                   "compiled step at batch 64 on an H200 ran 0.99x as long with it")
    workers: int = option(-1, "data-loading worker processes (-1 = automatic)", low=-1)
    # Output
    out: str = option("", "run folder: checkpoints, sample grids, metrics log and loss curve")
    save_every: int = option(2000, "write a checkpoint and a sample grid every this many steps", **POSITIVE)
    keep_checkpoints: int = option(3, "keep this many most recent checkpoints", **POSITIVE)
    grid_images: int = option(64, "images in each sample grid", **NON_NEGATIVE)
    log_every: int = option(50, "append to metrics.jsonl every this many steps", **POSITIVE)
    logger: str = option("none", "also log scalars and sample grids to a tracker (metrics.jsonl stays the record): "
                         "tensorboard (RUN/logs; pip install 'difflab[tensorboard]') or wandb", LOGGERS)
    # Quality while training (difflab.training.monitor)
    eval_every: int = option(0, "score samples of the EMA weights every this many steps (0 = never): FD, and KID "
                             "with --eval-metric kid, against the training images, logged to metrics.jsonl and "
                             "quality.png", **NON_NEGATIVE)
    eval_images: int = option(1000, "samples per evaluation", low=2)
    eval_metric: str = option("fd", "the score that --keep-best and --early-stop-patience follow (lower is better)",
                              EVAL_METRICS)
    eval_features: str = option("inception", "feature network of the scores: inception (FID's; needs its weights, "
                                "see `difflab fid --help`) or FILE.py:FUNCTION, e.g. ../shared/eval/featnet.py:cifar10")
    eval_batch_size: int = option(250, "images per batch when sampling and extracting features for an evaluation",
                                  **POSITIVE)
    eval_sampler: str = option("dpmpp-2m", "sampler of the evaluation samples, for families with steps (at 20 steps "
                               "DPM-Solver++'s FD is about half DDIM's, at the same cost: benchmarks/RESULTS.md)",
                               sampler_names())
    eval_sampler_steps: int = option(20, "sampler steps of the evaluation samples, for families with steps "
                                     "(diffusion: --eval-sampler); 0 = those of the grids", **NON_NEGATIVE)
    keep_best: bool = option(False, "keep the best-scoring checkpoint as RUN/checkpoints/best (sample --weights best)")
    early_stop_patience: int = option(0, "stop when the score has not improved for this many evaluations (0 = never)",
                                      **NON_NEGATIVE)
    holdout: int = option(0, "set this many training images aside, never trained on: the baseline of the "
                          "memorisation alarm (near copies of training images, at each evaluation)", **NON_NEGATIVE)

    def check(self) -> None:
        if not self.data:
            raise ConfigError("no data given: pass an image folder, a .zip archive or a built-in name (mnist, cifar10, "
                              "shapes)", option="data")
        if not self.out:
            raise ConfigError("{option} is required: the run folder for checkpoints and samples", option="out")
        from difflab.training.monitor import MonitorSettings
        from difflab.training.trackers import check_logger
        from difflab.training.speed import compile_cache_dir
        MonitorSettings.from_options(self).check()
        check_logger(self.logger)
        compile_cache_dir(self.compile_cache)  # a ConfigError now for a cache path that cannot be a folder


@dataclass
class DiffusionOptions:
    """The diffusion family's own options: its U-Net, its noise process, its optimiser and EMA."""
    # Network
    channels: int = option(64, "U-Net base width (channels of the first level)", **POSITIVE)
    dim_mults: str = option(AUTO, "width multiplier per U-Net level, e.g. 1,2,4 (levels - 1 downsamplings), or auto: "
                            "from --image-size, halving it while the map is over 16 px, to at least 3 levels "
                            "where it halves evenly, widths 1,2,4 at the lowest three (1,2,4 at 28, 32 and 64 "
                            "px; 1,1,2,4 at 96 and 128; 1,1,1,2,4 at 256)")
    res_blocks: int = option(2, "residual blocks per U-Net level", **POSITIVE)
    attn_resolutions: str = option(AUTO, "feature-map sizes that get self-attention, e.g. 16,8 ('' = none; the "
                                   "middle block always attends), or auto: the level at a quarter of --image-size, "
                                   "at most 32 px (7 at 28, 8 at 32, 16 at 64, 24 at 96, 32 at 128 and 256)")
    attn_head_channels: int = option(64, "channels per self-attention head (widths above it must be multiples)",
                                     **POSITIVE)
    dropout: float = option(0.0, "dropout in the residual blocks", **FRACTION)
    input_denoiser: str = option("", "a --model denoiser run (folder or checkpoint) whose output the U-Net sees "
                                 "instead of x_t, net(clamp(D(x_t), -1, 1), t), in training and sampling; D is frozen "
                                 "and kept in this run's checkpoints. The course report's failed variant, "
                                 "measured far worse than plain training (MNIST, 1,000 steps: FD 160 against 7.5; "
                                 "docs/concepts.md, section 10); '' = off")
    # Diffusion
    timesteps: int = option(1000, "number of diffusion steps T", low=2)
    # (The choices are the registries of difflab.diffusion: a new schedule there is a new choice here.)
    beta_schedule: str = option("cosine", "noise schedule; keras-cosine is the Keras DDIM lab's continuous one "
                                "(signal rate cos, noise rate sin, between signal rates 0.95 and 0.02; the network "
                                "is conditioned on the noise level), on a grid of --timesteps diffusion times",
                                tuple(BETA_SCHEDULES))
    objective: str = option("pred_v", "what the network predicts", tuple(OBJECTIVES))
    loss_weighting: str = option("min_snr", "per-timestep loss weighting", tuple(LOSS_WEIGHTINGS))
    loss_norm: str = option("l2", "distance between output and target: l2 (mean squared error, DDPM's) or l1 "
                            "(mean absolute error, the Keras lab's)", tuple(LOSS_NORMS))
    min_snr_gamma: float = option(5.0, "gamma of min-SNR weighting", **POSITIVE)
    clip: str = option("static", "clipping of the predicted clean image when sampling", tuple(CLIPPING))
    # Optimisation
    lr: float = option(2e-4, "peak learning rate of AdamW", low=0, high=1, low_inclusive=False, high_inclusive=False)
    warmup_steps: int = option(200, "linear learning-rate warm-up", **NON_NEGATIVE)
    lr_decay: str = option("none", "after warm-up: keep --lr (none), or decay it to zero at the end of the budget "
                           "(--steps, or --max-minutes when that comes first)", ("none", "cosine", "linear"))
    weight_decay: float = option(0.0, "AdamW weight decay", **NON_NEGATIVE)
    adam_beta2: float = option(0.99, "AdamW beta2", **FRACTION)
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)", **NON_NEGATIVE)
    grad_accum: int = option(1, "gradient accumulation: micro-batches per optimisation step", **POSITIVE)
    ema_decay: float = option(0.999, "decay of the exponential moving average of the weights used for sampling",
                              **FRACTION)
    ema_every: int = option(1, "update the EMA every this many steps", **POSITIVE)
    ema_warmup_steps: int = option(100, "0 = off; any other value switches on the EMA warm-up, decay = "
                                        "min(decay, (1 + n) / (10 + n)) at update n, so --ema-decay 0.995 takes "
                                        "effect only after ~1,800 updates (the value itself is not a step count)",
                                   **NON_NEGATIVE)
    grid_sampler_steps: int = option(50, "DDIM steps for the sample grids", **POSITIVE)

    def dim_mults_tuple(self) -> tuple[int, ...]:
        """The U-Net's width multipliers; `auto` is resolved from the image size."""
        if is_auto(self.dim_mults):
            from difflab.network.config import auto_dim_mults
            return auto_dim_mults(self.image_size)
        return parse_int_tuple(self.dim_mults, "dim_mults", allow_empty=False)

    def attn_resolutions_tuple(self) -> tuple[int, ...]:
        """The feature-map sizes with self-attention; `auto` is resolved from the image size and levels."""
        if is_auto(self.attn_resolutions):
            from difflab.network.config import auto_attn_resolutions
            return auto_attn_resolutions(self.image_size, self.dim_mults_tuple())
        return parse_int_tuple(self.attn_resolutions, "attn_resolutions", allow_empty=True)

    def resolve_auto(self) -> None:
        if is_auto(self.attn_resolutions):  # follows the levels, auto or not
            self.attn_resolutions = format_int_tuple(self.attn_resolutions_tuple())
        if is_auto(self.dim_mults):
            self.dim_mults = format_int_tuple(self.dim_mults_tuple())

    def check(self) -> None:
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"{OPTION} ({self.batch_size}) must be divisible by {{option:grad_accum}} "
                              f"({self.grad_accum})", option="batch_size")
        self.dim_mults_tuple()
        self.attn_resolutions_tuple()


@dataclass
class TrainConfig(DiffusionOptions, RunOptions):
    """A diffusion run's options: the run's (RunOptions) and the family's (DiffusionOptions).
    Other families combine RunOptions with their own option set the same way
    (`difflab.families.config_class`)."""


def coerce_options(values: dict[str, Any], source: str, options: type | None = None) -> dict[str, Any]:
    """Option names (dashes or underscores) and values from a file or the command line,
    checked against the fields of `options` (default: TrainConfig) and converted to their types."""
    known = {f.name: f for f in dataclasses.fields(options or TrainConfig)}
    coerced = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{source}: unknown option {key!r} (the options of `difflab train`, listed by its help)")
        coerced[name] = _coerce(known[name], value, source)
    return coerced


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def parse_int_tuple(value: str | Sequence[int], option: str, allow_empty: bool = True) -> tuple[int, ...]:
    """'1,2,4' (or a sequence such as (1, 2, 4)) -> (1, 2, 4): positive whole numbers, and '' -> ()
    where `allow_empty` (`attn_resolutions ''` = no attention outside the middle block). Anything
    else is a ConfigError naming `option` (its library name, e.g. "dim_mults")."""
    text = value if isinstance(value, str) else ",".join(str(v) for v in value)
    parts = [part.strip() for part in text.split(",")] if text.strip() else []
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = None
    if values is None or any(v <= 0 for v in values):
        raise ConfigError(f"{OPTION} must be comma-separated positive integers like 1,2,4; got {text!r}",
                          option=option)
    if not values and not allow_empty:
        raise ConfigError(f"{OPTION} must list at least one value, like 1,2,4; got {text!r}", option=option)
    return values


def format_int_tuple(values: Sequence[int]) -> str:
    """(1, 2, 4) -> '1,2,4': the spelling of a tuple option (parse_int_tuple's inverse)."""
    return ",".join(str(v) for v in values)


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Config-file values to the field's type ('1,2,4' or [1, 2, 4] for tuples-as-strings).

    Nothing is silently changed: a bool is not an int (YAML `true` for --batch-size), a float
    with a fraction is not an int (8.5), numbers must be finite (TOML 1e400 is inf), and a bool
    option takes true/false (or the words 1/0, yes/no, on/off), not a number."""
    kind = type(f.default)

    def reject(expected: str = f"a {kind.__name__}") -> ConfigError:
        return ConfigError(f"{source}: {OPTION} expects {expected}; got {value!r}", option=f.name)

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise reject("true or false")
    if kind is int:
        if isinstance(value, bool):
            raise reject("a whole number, not true/false")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise reject("a finite whole number")
            if not value.is_integer():
                raise reject("a whole number (no fraction)")
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise reject("a whole number") from None
        raise reject("a whole number")
    if kind is float:
        if isinstance(value, bool):
            raise reject("a number, not true/false")
        try:
            number = float(value) if isinstance(value, (int, float, str)) else None
        except (ValueError, OverflowError):
            number = None
        if number is None:
            raise reject("a number")
        if number != number or number in (float("inf"), float("-inf")):
            raise reject("a finite number")
        return number
    if kind is str:
        if isinstance(value, bool):
            choices = f.metadata.get("choices") or ()
            if "on" in choices and "off" in choices:  # YAML 1.1 reads on/off as true/false
                return "on" if value else "off"
            raise reject("a text value, not true/false")
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        if isinstance(value, (str, int, float)):
            return str(value)
        raise reject("a text value")
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise reject() from None


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file of options; a [train] table is also accepted.
    A file that cannot be read or parsed is a ConfigError naming the file and, where known, the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{OPTION}: no such file {str(path)!r}", option="config")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{OPTION}: cannot read {path}: {error}", option="config") from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{OPTION}: {path} is not valid TOML: {error}", option="config") from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            where = getattr(error, "problem_mark", None)
            line = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"{OPTION}: {path} is not valid YAML{line}: {problem}", option="config") from None
        values = {} if values is None else values
    else:
        raise ConfigError(f"{OPTION} must be a .toml, .yaml or .yml file; got {str(path)!r}", option="config")
    if not isinstance(values, dict):
        raise ConfigError(f"{OPTION}: {path} must hold a table of options", option="config")
    values = values.get("train", values)
    if not isinstance(values, dict):
        raise ConfigError(f"{OPTION}: the [train] table of {path} must hold options, not {type(values).__name__}", option="config")
    return values
