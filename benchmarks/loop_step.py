"""The run's own training step, built from run options as `training/loop.py` builds it, for the
benchmarks that time or profile it (`compile_time.py`, `profile_train_step.py`).

Any family: the options go through `families.make_config` (so `{"model": "stylegan2"}` gives the
GAN's trainer), the family builds its trainer, `trainer.prepare` compiles it as the loop does
(inside `compile_cache`, under the run's autocast, with the run's --compile / --cuda-graphs
decisions), and `step(index)` is one `trainer.train_step` on a fixed batch of random images in
the batches' layout, with the loop's StepContext (a per-step seeded generator, autocast, plain
backward, no DDP). The data pipeline, logging and checkpoints are left out.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class LoopStep:
    config: Any  # the family's run options
    trainer: Any  # the family's trainer
    device: torch.device
    precision: str
    compiling: bool
    cuda_graphs: bool
    prepare_started: float  # time.perf_counter() as trainer.prepare began (the clock of a compile's cost)
    prepare_s: float  # seconds in trainer.prepare (the compile's setup; the compile runs at the first step)
    step: Callable[[int], None]  # one training step, index = the step number

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def build_loop_step(values: dict[str, Any], device: torch.device, image_channels: int = 3) -> LoopStep:
    """The trainer of the options `values` (e.g. {"batch_size": 64, "compile": "on"}) on `device`,
    prepared, and its step. `values` must not name data: random images stand in."""
    from difflab.families import get_family, make_config
    from difflab.families.base import StepContext
    from difflab.generation import autocast_for
    from difflab.training.speed import (compile_cache, memory_format_for, resolve_mixed_precision,
                                        set_cudnn_benchmark, should_compile, use_cuda_graphs)

    config = make_config({"data": "random", "out": "unused", **values}, "benchmark options").validate()
    precision = resolve_mixed_precision(config.mixed_precision, device)
    compiling = should_compile(config.compile, device, config.steps, config.max_minutes)  # as the loop decides
    cuda_graphs = use_cuda_graphs(config.cuda_graphs, compiling, device)
    torch.manual_seed(config.seed)
    trainer = get_family(config.model).trainer(config, image_channels, device)
    set_cudnn_benchmark(config, device)
    layout = memory_format_for(config, device)
    shape = (config.batch_size, image_channels, config.image_size, config.image_size)
    example = torch.zeros(shape, device=device).contiguous(memory_format=layout)
    images = torch.rand(shape, generator=torch.Generator().manual_seed(1)).mul(2).sub(1).to(device)
    images = images.contiguous(memory_format=layout)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA's context and the data are ready before any clock starts
    started = time.perf_counter()
    with compile_cache(config.compile_cache, enabled=compiling), autocast_for(device, precision):
        trainer.prepare(lambda *objects: objects, example, compiling, cuda_graphs)
    prepare_s = time.perf_counter() - started

    def step(index: int) -> None:
        context = StepContext(step=index, run_seconds=0.0, generator=torch.Generator(device).manual_seed(index),
                              autocast=lambda: autocast_for(device, precision), backward=lambda loss: loss.backward(),
                              no_sync=lambda module: nullcontext(), clip_grad_norm=torch.nn.utils.clip_grad_norm_)
        trainer.train_step(images, context)

    return LoopStep(config, trainer, device, precision, compiling, cuda_graphs, started, prepare_s, step)
