"""Optional fast paths for the network, each behind a switch with a safe fallback."""
from __future__ import annotations

import warnings

import torch
from torch import nn


COMPILE_AUTO_MIN_STEPS = 2000
COMPILE_AUTO_MIN_MINUTES = 3.0


def should_compile(setting: str, device: torch.device, steps: int | None = None,
                   max_minutes: float = 0.0) -> bool:
    """`auto` compiles on CUDA for runs long enough to pay the compile back. Measured on an
    H100 (benchmarks/gpu/fastpaths.sh): compiling the 64x64 default network took 79 s, then a
    batch-64 step ran in 26.5 ms instead of 71.9 ms (2.7x), so it pays after ~1,750 steps;
    runs planned shorter than COMPILE_AUTO_MIN_STEPS steps or COMPILE_AUTO_MIN_MINUTES minutes
    stay eager. On a CPU the compile time rarely pays back, so auto never compiles there."""
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


def compile_or_eager(model: nn.Module, example: tuple[torch.Tensor, ...], enabled: bool,
                     backward: bool = True, cuda_graphs: bool = False) -> nn.Module:
    """The network as the training step runs it, checked by one forward (and backward) pass
    on `example`:
    - `enabled`: torch.compile (Inductor: fused kernels), with `cuda_graphs` in its
      "reduce-overhead" mode;
    - only `cuda_graphs`: torch.compile's "cudagraphs" backend, which records the eager
      kernels of forward and backward as CUDA graphs without generating code (seconds to
      set up instead of a minute or more);
    - neither: the eager network.
    If the compiler is missing or fails (no C compiler, unsupported platform), warn and
    return the eager network, which computes the same function. With `cuda_graphs` the
    caller marks each step's start with `torch.compiler.cudagraph_mark_step_begin()`."""
    if not (enabled or cuda_graphs):
        return model
    try:
        if enabled:
            compiled = torch.compile(model, mode="reduce-overhead" if cuda_graphs else None, dynamic=False)
        else:
            compiled = torch.compile(model, backend="cudagraphs", dynamic=False)
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        output = compiled(*example)
        if backward:
            output.float().mean().backward()
            model.zero_grad(set_to_none=True)
        return compiled
    except Exception as error:  # the compiler raises many types; any failure means "use eager"
        warnings.warn(f"--compile/--cuda-graphs: torch.compile failed ({type(error).__name__}: {error}); "
                      "training eagerly")
        model.zero_grad(set_to_none=True)
        return model


def cpu_has_bf16_matrix_units() -> bool:
    """Intel AMX tiles (Sapphire Rapids and later) run bf16 convolutions about twice as fast
    as fp32 here (measured: 0.22 s vs 0.40-0.59 s per MNIST-recipe step on 2 cores);
    without them CPU autocast is slower than fp32. Private torch helpers, so guarded."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe else False
    except Exception:
        return False


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """`auto` -> bf16 on GPUs with bf16 support and on CPUs with AMX, else no."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_has_bf16_matrix_units():
        return "bf16"
    return "no"
