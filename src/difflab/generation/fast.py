"""Fast paths for sampling, each behind a switch: a low-precision copy of the network,
torch.compile, and CUDA graphs of the fixed-shape forward pass.

Why (measured on an H100, 64x64, batch 250, `benchmarks/profile_gpu.py`): under autocast
most of a forward pass is not convolution but dtype casts and float32 GroupNorm/SiLU
traffic (209 cast kernels per pass). A bf16 copy of the weights run without autocast cut
the pass from 60.5 to 44.2 ms; torch.compile, which fuses GroupNorm, scale-shift and SiLU,
to 21.3 ms; a CUDA graph then removes the host's launch time, which matters at small
batches. Every path computes the same function as the plain network (to bf16 tolerance):
tests/test_fast_paths.py on the CPU, `benchmarks/bench_sample.py --check` on a GPU.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

SWITCH = ("auto", "on", "off")
COMPILE_AUTO_MIN_PASSES = 1000
"""`--compile auto` compiles when a job runs at least this many batched network passes (DDPM-1000
on any N; DDIM-50 from 50,000 images at batch 250). A cold compile costs ~25 s on an H100 and
then saves ~23 ms per pass of the 64x64 default network at batch 250: it pays after ~1,000."""


@dataclass(frozen=True)
class SamplingSpeed:
    """Resolved switches for one generation job."""
    low_precision: torch.dtype | None  # a bf16/fp16 copy of the weights (CUDA only), else autocast
    compile: bool
    cuda_graphs: bool
    compile_cache: str = "auto"  # --compile-cache: where a compile's on-disk caches go (training/speed.py)

    def describe(self) -> str:
        weights = str(self.low_precision).removeprefix("torch.") + " weights" if self.low_precision else "autocast"
        return f"{weights}, compile {'on' if self.compile else 'off'}, CUDA graphs {'on' if self.cuda_graphs else 'off'}"


def resolve_sampling_speed(device: torch.device, precision: str, compile: str = "auto", cuda_graphs: str = "auto",
                           network_passes: int = 0, compile_cache: str = "auto") -> SamplingSpeed:
    """Turn the --mixed-precision / --compile / --cuda-graphs / --compile-cache words into switches
    for `device` (a --compile-cache that cannot be a folder is a ConfigError naming it)."""
    for name, value in (("compile", compile), ("cuda_graphs", cuda_graphs)):
        if value not in SWITCH:
            from difflab.errors import ConfigError
            raise ConfigError(f"{{option}} must be one of {', '.join(SWITCH)}; got {value!r}", option=name)
    cuda = device.type == "cuda"
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if cuda else None
    compile_on = compile == "on" or (compile == "auto" and cuda and network_passes >= COMPILE_AUTO_MIN_PASSES)
    graphs_on = cuda and cuda_graphs != "off"
    from difflab.training.speed import compile_cache_dir
    compile_cache_dir(compile_cache)  # checked before any work, whether or not this job compiles
    return SamplingSpeed(low, compile_on, graphs_on, compile_cache)


def network_passes(count: int, batch_size: int, steps: int) -> int:
    """Batched forward passes of a generation job: batches x sampler steps."""
    return math.ceil(count / max(batch_size, 1)) * steps


class LowPrecisionNetwork(nn.Module):
    """A bf16/fp16 copy of a network, run outside autocast: no per-pass weight casts, and
    GroupNorm/SiLU read and write half the bytes. Input cast in, output in that dtype."""

    def __init__(self, network: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.network, self.dtype = copy.deepcopy(network).to(dtype), dtype

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.network(x.to(self.dtype), t)


class CUDAGraphNetwork(nn.Module):
    """Replays a CUDA graph of `network(x, t)` captured once per input shape, so one pass costs
    one launch instead of hundreds. Only under no_grad/inference_mode (sampling); with
    gradients enabled, or on a CPU, it simply calls the network.

    Written here because no installed library captures an arbitrary forward for reuse
    across calls with a fallback (torch.compile's "reduce-overhead" mode needs the compiler).
    """

    def __init__(self, network: nn.Module, warmup_calls: int = 2):
        super().__init__()
        self.network, self.warmup_calls = network, warmup_calls
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.device.type != "cuda" or torch.is_grad_enabled():
            return self.network(x, t)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        key = (x.shape, x.dtype, x.device, t.shape, t.dtype, torch.is_inference_mode_enabled(), _cuda_autocast())
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, t)
        graph, static_x, static_t, static_out = self.graphs[key]
        static_x.copy_(x)
        static_t.copy_(t)
        graph.replay()
        return static_out.clone()  # the next replay overwrites static_out

    def _capture(self, x: Tensor, t: Tensor) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]:
        static_x, static_t = x.clone(), t.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up: cuDNN autotuning and lazy init are not capturable
            for _ in range(self.warmup_calls):
                self.network(static_x, static_t)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.network(static_x, static_t)
        return graph, static_x, static_t, static_out


def _cuda_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cuda")
    except TypeError:  # torch < 2.4: no device argument, and it means CUDA
        return torch.is_autocast_enabled()


def fast_network(network: nn.Module, speed: SamplingSpeed) -> nn.Module:
    """`network` wrapped by the switched-on fast paths (low precision, then compile, then graphs)."""
    fast = LowPrecisionNetwork(network, speed.low_precision) if speed.low_precision else network
    if speed.compile:
        fast = compiled_for_inference(fast, speed.compile_cache)
    if speed.cuda_graphs:
        fast = CUDAGraphNetwork(fast)
    return fast


def compiled_for_inference(network: nn.Module, cache: str = "auto") -> nn.Module:
    """torch.compile with static shapes (each batch size compiles once; dynamic-shape kernels
    are slower), its on-disk caches in the --compile-cache folder `cache`, as training's; falls
    back to eager at the first call if the compiler is unavailable."""
    try:
        return _FallbackOnError(torch.compile(network, dynamic=False), network, cache)
    except Exception as error:  # noqa: BLE001 - e.g. an unsupported Python for dynamo
        warnings.warn(f"torch.compile is unavailable ({type(error).__name__}: {error}); sampling eagerly "
                      "(as with compile off)")
        return network


class _FallbackOnError(nn.Module):
    """Calls the compiled module; if compiling fails (no C compiler, no Triton), warns once and
    uses the eager module from then on. Both compute the same function. A call with a shape not
    seen before compiles, so it runs inside `compile_cache(cache)`."""

    def __init__(self, compiled: nn.Module, eager: nn.Module, cache: str = "auto"):
        super().__init__()
        self.compiled, self.eager, self.failed, self.cache = compiled, eager, False, cache
        self.compiled_shapes: set[tuple] = set()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if not self.failed:
            try:
                shape = (tuple(x.shape), x.dtype, tuple(t.shape))
                if shape in self.compiled_shapes:
                    return self.compiled(x, t)
                from difflab.training.speed import compile_cache
                with compile_cache(self.cache):
                    out = self.compiled(x, t)
                self.compiled_shapes.add(shape)
                return out
            except Exception as error:  # noqa: BLE001 - the compiler raises many types
                self.failed = True
                warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:300]}); "
                              "sampling eagerly (as with compile off)")
        return self.eager(x, t)
