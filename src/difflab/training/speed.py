"""Optional fast paths for the network, each behind a switch with a safe fallback."""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from difflab.errors import OPTION, ConfigError


COMPILE_AUTO_MIN_STEPS = 2000
COMPILE_AUTO_MIN_MINUTES = 3.0


def should_compile(setting: str, device: torch.device, steps: int | None = None,
                   max_minutes: float = 0.0) -> bool:
    """`auto` compiles on CUDA for runs long enough to pay the compile back. Measured on an
    H100 (benchmarks/gpu/fastpaths.sh): compiling the 64x64 default network took 79 s, then a
    batch-64 step ran in 26.5 ms instead of 71.9 ms (2.7x), so it pays after ~1,750 steps;
    runs planned shorter than COMPILE_AUTO_MIN_STEPS steps or COMPILE_AUTO_MIN_MINUTES minutes
    stay eager. On an H200 (session 12, benchmarks/RESULTS.md issue 17) it took 86 s cold and
    12 s from the on-disk cache, then a step ran 3.06x faster. On a CPU the compile time rarely
    pays back, so auto never compiles there."""
    if setting != "auto":
        return setting == "on"
    long_enough = (steps is None or steps >= COMPILE_AUTO_MIN_STEPS) and \
        (max_minutes <= 0 or max_minutes >= COMPILE_AUTO_MIN_MINUTES)
    return device.type == "cuda" and long_enough


def use_cuda_graphs(setting: str, compiled: bool, device: torch.device, processes: int = 1) -> bool:
    """CUDA graphs for the training step's forward and backward, on one CUDA device
    (off under several processes: DDP's gradient hooks run outside graphs).
    - auto: with --compile only (the compiler's reduce-overhead mode). Measured on an H100
      (benchmarks/RESULTS.md): compiled steps are short enough for launch time to matter,
      while eager steps are bound by their unfused kernels' memory traffic, so graphs of the
      eager kernels gained nothing (0.98x at batch 64) and cost set-up time.
    - on: also without --compile, through the compiler's "cudagraphs" backend.
    """
    if device.type != "cuda" or processes != 1 or setting == "off":
        return False
    return compiled or setting == "on"


def resolve_compile_scope(setting: str) -> str:
    """--compile-scope: `auto` compiles the whole network, as before blocks existed. Blocks compile
    fewer graphs but leave the code between them eager and cut the step into separate graphs; which
    wins within an 8-minute run is measured by benchmarks/compile_time.py (benchmarks/RESULTS.md,
    issue 17), on a CPU so far, not yet on a GPU."""
    return "whole" if setting == "auto" else setting


def compile_or_eager(model: nn.Module, example: tuple[torch.Tensor, ...], enabled: bool,
                     backward: bool = True, cuda_graphs: bool = False, scope: str = "whole") -> nn.Module:
    """The network as the training step runs it, checked by one forward (and backward) pass
    on `example`:
    - `enabled`: torch.compile (Inductor: fused kernels), with `cuda_graphs` in its
      "reduce-overhead" mode. `scope` "whole" compiles the network as one graph and returns the
      compiled wrapper; "blocks" compiles each of `model.compile_regions()` in place (regional
      compilation: blocks of the same structure and input shapes share one graph) and returns
      `model` itself, its glue code (stem, resampling, skips, head) eager;
    - only `cuda_graphs`: torch.compile's "cudagraphs" backend, which records the eager
      kernels of forward and backward as CUDA graphs without generating code (seconds to
      set up instead of a minute or more);
    - neither: the eager network.
    If the compiler is missing or fails (no C compiler, unsupported platform), warn and
    return the eager network, which computes the same function. With `cuda_graphs` the
    caller marks each step's start with `torch.compiler.cudagraph_mark_step_begin()`."""
    if not (enabled or cuda_graphs):
        return model
    if enabled:
        options = {"mode": "reduce-overhead" if cuda_graphs else None, "dynamic": False}
    else:
        options = {"backend": "cudagraphs", "dynamic": False}
    blocks = compile_regions(model) if enabled and scope == "blocks" else []
    try:
        if blocks:
            # Dynamo keeps one cache per code object: every block of a class shares its forward's
            # entries (one per input shape), so allow one entry per block instead of the default 8
            # (`cache_size_limit` before torch 2.7).
            dynamo = torch._dynamo.config
            limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
            setattr(dynamo, limit, max(getattr(dynamo, limit), len(blocks)))
            for block in blocks:
                block.compile(**options)
            compiled = model
        else:
            compiled = torch.compile(model, **options)
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        output = compiled(*example)
        if backward:
            output.float().mean().backward()
            model.zero_grad(set_to_none=True)
        return compiled
    except Exception as error:  # the compiler raises many types; any failure means "use eager"
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); training eagerly "
                      "(as with compile and cuda_graphs off)")
        for block in blocks:
            block._compiled_call_impl = None  # what nn.Module.compile set: undone, the block is eager again
        model.zero_grad(set_to_none=True)
        return model


def compile_regions(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks `--compile-scope blocks` compiles: those the network lists in its
    `compile_regions()` (the U-Net: its residual/attention blocks and its middle block)."""
    regions = getattr(model, "compile_regions", None)
    if regions is None:
        raise ConfigError(f"{OPTION} blocks needs a network that lists its repeated blocks; "
                          f"{type(model).__name__} does not (use whole)", option="compile_scope")
    return list(regions())


COMPILE_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_dir(setting: str) -> Path | None:
    """The folder --compile-cache names (None for off), without creating it: auto is
    $TORCHINDUCTOR_CACHE_DIR when the user set it, else $XDG_CACHE_HOME/difflab/inductor
    (~/.cache/difflab/inductor). ConfigError for a path that cannot be a folder."""
    if setting == "off":
        return None
    if setting == "auto":
        if os.environ.get(COMPILE_CACHE_VARIABLE):
            return Path(os.environ[COMPILE_CACHE_VARIABLE])
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "difflab" / "inductor"
    directory = Path(setting).expanduser()
    if not setting.strip() or (directory.exists() and not directory.is_dir()):
        raise ConfigError(f"{OPTION} must be auto, off or a folder; got {setting!r}", option="compile_cache")
    return directory


@contextmanager
def compile_cache(setting: str, enabled: bool = True) -> Iterator[Path | None]:
    """While difflab compiles (`enabled`), point Inductor's on-disk caches at the --compile-cache
    folder (created here), by setting TORCHINDUCTOR_CACHE_DIR for the duration and restoring it
    after; the compiler's worker processes start inside and keep it. `off`: the FX-graph and
    AOTAutograd caches are turned off for the duration instead. Not enabled: nothing changes."""
    directory = compile_cache_dir(setting) if enabled else None
    if not enabled or directory is None:
        with (_caches_off() if enabled else nullcontext()):
            yield None
        return
    directory.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(COMPILE_CACHE_VARIABLE)
    os.environ[COMPILE_CACHE_VARIABLE] = str(directory.resolve())
    _forget_cache_paths()
    try:
        yield directory
    finally:
        if before is None:
            os.environ.pop(COMPILE_CACHE_VARIABLE, None)
        else:
            os.environ[COMPILE_CACHE_VARIABLE] = before


@contextmanager
def _caches_off() -> Iterator[None]:
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    with inductor_config.patch({k: False for k in ("fx_graph_cache",) if hasattr(inductor_config, k)}), \
            functorch_config.patch({k: False for k in ("enable_autograd_cache",) if hasattr(functorch_config, k)}):
        yield


def _forget_cache_paths() -> None:
    """Inductor memoises paths under its cache folder; drop them so a new folder takes effect
    (what torch's own temporary_cache_dir does; a private helper, so guarded)."""
    try:
        from torch._inductor.utils import clear_caches
        clear_caches()
    except Exception:
        pass


def memory_format_for(config, device: torch.device) -> torch.memory_format:
    """channels-last only on CUDA and only when --channels-last asks for it."""
    return torch.channels_last if (config.channels_last and device.type == "cuda") else torch.contiguous_format


def set_cudnn_benchmark(config, device: torch.device) -> None:
    """torch.backends.cudnn.benchmark as --cudnn-benchmark says, on CUDA only (the flag is process-wide)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(getattr(config, "cudnn_benchmark", False))


def optimizer_kernel(device: torch.device) -> dict:
    """Fused Adam/AdamW on CUDA (one kernel for all parameters); multi-tensor foreach elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def cpu_bf16_capability() -> str:
    """Which bf16 matrix path this CPU's oneDNN kernels can use: "amx" (Intel AMX tiles, Sapphire
    Rapids and later), "avx512_bf16" (AVX-512 BF16 dot products: AMD Zen 4, Intel Cooper Lake) or
    "none". Read from the CPU's feature flags through torch's own probes (private helpers, so
    guarded), never from the vendor's name. DIFFLAB_CPU_BF16=0 in the environment reports "none"
    (so `auto` takes fp32), to reproduce a CPU without bf16 instructions on one that has them."""
    if os.environ.get("DIFFLAB_CPU_BF16", "").strip() == "0":
        return "none"
    def probe(name: str) -> bool:
        helper = getattr(torch.cpu, name, None)
        try:
            return bool(helper()) if helper else False
        except Exception:
            return False
    if probe("_is_amx_tile_supported"):
        return "amx"
    if probe("_is_avx512_bf16_supported"):
        return "avx512_bf16"
    return "none"


# CPUs whose bf16 autocast was measured faster than fp32 at equal quality (benchmarks/cpu_precision.py,
# benchmarks/mnist_steps.py; benchmarks/RESULTS.md, issue 13): AMX (Sapphire Rapids: about 2x) and
# AVX-512-BF16 without AMX (AMD EPYC Zen 4: 1.49x on the MNIST recipe's step, 1.88x on the demo's).
# Without either, oneDNN emulates bf16 and autocast is slower than fp32.
BF16_CPU_CAPABILITIES = ("amx", "avx512_bf16")


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """`auto` -> bf16 on GPUs with bf16 support and on CPUs with bf16 matrix instructions
    (BF16_CPU_CAPABILITIES), else no."""
    return describe_precision_choice(requested, device)[0]


def describe_precision_choice(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision `requested` resolves to on `device`, and why, in words for the user."""
    if requested != "auto":
        return requested, f"mixed precision {requested} was asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "this GPU supports bf16"
        return "no", "this GPU has no bf16 support"
    capability = cpu_bf16_capability()
    if device.type == "cpu" and capability in BF16_CPU_CAPABILITIES:
        units = {"amx": "Intel AMX tiles", "avx512_bf16": "AVX-512 BF16 instructions"}[capability]
        return "bf16", f"this CPU has {units}, where bf16 autocast was measured faster than fp32"
    return "no", "this CPU has no bf16 matrix instructions (no AMX, no AVX-512 BF16), so fp32 is faster"
