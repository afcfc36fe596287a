"""The diffusion family: a U-Net trained with the DDPM loss, AdamW, an EMA of its weights, and
DDIM preview grids. Its generator is `generation.model_io.LoadedModel`, sampled by any of the
samplers in `difflab.samplers`."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch import Tensor

from difflab.build import build_loss, build_network, build_schedule, check_buildable
from difflab.config import DiffusionOptions, TrainConfig
from difflab.diffusion import make_denoiser
from difflab.families.base import Family, StepContext
from difflab.families.input_denoiser import INPUT_DENOISER, check_input_denoiser, load_input_denoiser
from difflab.samplers import get_sampler, timesteps_for
from difflab.training.checkpoint import load_network_state, network_state
from difflab.training.ema import EMA
from difflab.training.lr_schedule import learning_rate
from difflab.training.speed import compile_or_eager, memory_format_for, optimizer_kernel, resolve_compile_scope


class DiffusionTrainer:
    """Network, EMA, AdamW and the DDPM loss (with the run's objective and weighting)."""

    def __init__(self, config: TrainConfig, image_channels: int, device: torch.device):
        check_buildable(config)
        self.config, self.device, self.image_channels = config, device, image_channels
        denoiser, self.input_denoiser = load_input_denoiser(config, image_channels)  # None, None without it
        self.model = build_network(config, image_channels, self.input_denoiser)
        if denoiser is not None:
            self.model.denoiser.load_state_dict(denoiser.state_dict())
        self.model.to(device=device, memory_format=memory_format_for(config, device))
        self.ema = EMA(self.model, decay=config.ema_decay, update_every=config.ema_every,
                       warmup=config.ema_warmup_steps > 0)
        trained = [parameter for parameter in self.model.parameters() if parameter.requires_grad]  # not a frozen D
        self.optimizer = torch.optim.AdamW(trained, lr=config.lr, betas=(0.9, config.adam_beta2),
                                           weight_decay=config.weight_decay, **optimizer_kernel(device))
        self.schedule = build_schedule(config, device)
        self.loss_fn = build_loss(config, self.schedule)
        self.network: torch.nn.Module = self.model  # what the step runs: compiled and/or wrapped for DDP
        self.cuda_graphs = False
        self.lr = config.lr

    def prepare(self, prepare: Callable[..., Any], example_images: Tensor, compile: bool,
                cuda_graphs: bool) -> str | None:
        example = (example_images, torch.zeros(example_images.shape[0], device=example_images.device))
        self.cuda_graphs = cuda_graphs
        scope = resolve_compile_scope(self.config.compile_scope)
        network = compile_or_eager(self.model, example, enabled=compile, cuda_graphs=cuda_graphs, scope=scope)
        self.network, self.optimizer = prepare(network, self.optimizer)
        self.network.train()
        return f"{scope}{', CUDA graphs' if cuda_graphs else ''}" if compile else None

    def train_step(self, images: Tensor, context: StepContext) -> dict[str, Tensor]:
        config = self.config
        self.lr = learning_rate(config, context.step, context.run_seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        losses = []
        micro_batches = images.split(images.shape[0] // config.grad_accum)
        for index, micro in enumerate(micro_batches):
            final_micro = index == len(micro_batches) - 1
            with context.no_sync(self.network) if not final_micro else nullcontext():
                if self.cuda_graphs:  # a new iteration: the graphs may reuse the last step's output memory
                    torch.compiler.cudagraph_mark_step_begin()
                with context.autocast():
                    loss = self.loss_fn(self.network, micro, context.generator)
                context.backward(loss / config.grad_accum)
            losses.append(loss.detach())
        if config.grad_clip > 0:
            context.clip_grad_norm(self.network.parameters(), config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model, context.step + 1)
        return {"loss": losses[0] if len(losses) == 1 else torch.stack(losses).mean()}

    def log_state(self) -> dict[str, float]:
        return {"lr": self.lr}

    def after_log(self, averages: dict[str, float], step: int) -> str | None:
        return None  # the core already stops on a non-finite loss

    def state(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        tensors, meta = network_state(self.model, self.ema, self.optimizer)
        if self.input_denoiser is not None:  # what `sample` rebuilds D from (its weights are in the groups)
            meta[INPUT_DENOISER] = self.input_denoiser
        return tensors, meta

    def load_state(self, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any]) -> None:
        load_network_state(self.model, self.ema, self.optimizer, tensors, meta)
        self.input_denoiser = meta.get(INPUT_DENOISER, self.input_denoiser)  # D as the checkpoint holds it

    def preview(self, count: int, seed: int, steps: int | None = None, sampler: str | None = None) -> Tensor:
        config = self.config
        steps = min(steps or config.grid_sampler_steps, config.timesteps)
        generator = torch.Generator(self.device).manual_seed(seed)
        noise = torch.randn(count, self.image_channels, config.image_size, config.image_size,
                            device=self.device, generator=generator)
        denoiser = make_denoiser(self.ema.shadow, self.schedule, config.objective, config.clip)
        return get_sampler(sampler or "ddim").sample(denoiser, noise, self.schedule,
                                                     timesteps_for(config.timesteps, steps), generator=generator)


def check_diffusion_options(config: TrainConfig) -> None:
    """The checks before any data is read: the network and schedule options, and --input-denoiser's run."""
    check_buildable(config)
    check_input_denoiser(config)


def load_diffusion_generator(path, device, weights):
    from difflab.generation.model_io import load_model
    return load_model(path, device=device, weights=weights)


FAMILY = Family(name="diffusion", help="a denoising diffusion model (DDPM/DDIM/DPM-Solver++ sampling)",
                options=DiffusionOptions, trainer=DiffusionTrainer, load_generator=load_diffusion_generator,
                check=check_diffusion_options)
