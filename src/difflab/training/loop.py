"""The training loop: one readable function in commented phases (after EDM's training_loop.py).

Determinism: the data order, augmentation and diffusion noise of step s depend only on
(seed, s, process rank), never on how many steps ran before in this process, so training
N steps, stopping, resuming and training M more gives the same weights as N + M straight.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm

from difflab.build import build_loss, build_network, build_schedule, check_buildable
from difflab.config import TrainConfig
from difflab.data import BatchStream, augment_batch, load_dataset
from difflab.diffusion import make_denoiser
from difflab.errors import DataError
from difflab.samplers import sample_ddim
from difflab.training.checkpoint import (Checkpoint, find_checkpoint, load_checkpoint, optimizer_from_checkpoint,
                                         optimizer_to_checkpoint, rng_from_checkpoint, rng_to_checkpoint,
                                         save_checkpoint)
from difflab.training.ema import EMA
from difflab.training.lr_schedule import learning_rate
from difflab.training.metrics_log import MetricsLog, plot_loss_curve
from difflab.training.speed import compile_or_eager, resolve_mixed_precision, should_compile, use_cuda_graphs
from difflab.viz.grid import save_grid, to_uint8


class NonFiniteLossError(RuntimeError):
    """Training diverged; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    images_per_second: float
    stopped_by: str  # "steps" | "time"


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A distinct, reproducible seed for each (step, process, random stream)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + stream) % (2**63 - 1)


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    check_buildable(config)  # inconsistent network options fail before the data is read
    run_dir = Path(config.out)
    checkpoints_dir, samples_dir = run_dir / "checkpoints", run_dir / "samples"

    # ---- 1. Devices and processes ------------------------------------------------------------------
    # Without CUDA, tell accelerate so: under a multi-process launcher it then trains on the CPUs
    # with gloo (accelerate picks MULTI_CPU only when cpu=True).
    cpu_only = not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=cpu_only,
        mixed_precision=resolve_mixed_precision(config.mixed_precision, PartialState(cpu=cpu_only).device),
        gradient_accumulation_steps=1,  # accumulation is done by hand below, per optimisation step
    )
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    if config.batch_size % (world * config.grad_accum):
        raise DataError(f"--batch-size {config.batch_size} must be divisible by processes x --grad-accum "
                        f"({world} x {config.grad_accum})")
    torch.manual_seed(config.seed)

    # ---- 2. Data -------------------------------------------------------------------------------------
    dataset = load_dataset(config.data, image_size=config.image_size, channels=config.image_channels,
                           root=config.data_root or None, max_images=config.max_images or None,
                           progress=progress and is_main)
    dataset.require_at_least(config.batch_size, option="--batch-size")

    # ---- 3. Network, EMA, optimiser, loss --------------------------------------------------------------
    model = build_network(config, dataset.channels)
    memory_format = torch.channels_last if (config.channels_last and device.type == "cuda") else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    ema = EMA(model, decay=config.ema_decay, update_every=config.ema_every, warmup=config.ema_warmup_steps > 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, config.adam_beta2),
                                  weight_decay=config.weight_decay, **_optimizer_kernel(device))
    schedule = build_schedule(config, device)
    loss_fn = build_loss(config, schedule)

    # ---- 4. Resume -------------------------------------------------------------------------------------
    start_step, elapsed_before = 0, 0.0
    if resume:
        checkpoint = load_checkpoint(find_checkpoint(checkpoints_dir))
        model.load_state_dict(checkpoint.tensors["model"])
        ema.shadow.load_state_dict(checkpoint.tensors["ema"])
        ema.load_state_dict(checkpoint.meta["ema"])
        optimizer_from_checkpoint(optimizer, checkpoint.tensors.get("optimizer", {}), checkpoint.meta["optimizer"])
        rng_from_checkpoint(checkpoint.tensors["rng"], checkpoint.meta["rng"])
        start_step, elapsed_before = checkpoint.step, float(checkpoint.meta.get("train_seconds", 0.0))
        if is_main:
            print(f"difflab: resuming {run_dir} from step {start_step}")

    per_process_batch = config.batch_size // world
    micro_batch = per_process_batch // config.grad_accum
    example = (torch.zeros(micro_batch, dataset.channels, config.image_size, config.image_size, device=device),
               torch.zeros(micro_batch, device=device))
    started = time.monotonic()  # the --max-minutes budget includes compilation
    compiling = should_compile(config.compile, device, config.steps - start_step, config.max_minutes)
    cuda_graphs = use_cuda_graphs(config.cuda_graphs, compiling, device, world)
    with accelerator.autocast():  # compile under the training step's autocast, or it compiles twice
        network = compile_or_eager(model, example, enabled=compiling, cuda_graphs=cuda_graphs)
    network, optimizer = accelerator.prepare(network, optimizer)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json() + "\n")
    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=start_step if resume else None) if is_main else None

    def save(step: int, train_seconds: float) -> Path | None:
        path = None
        if is_main:
            optimizer_tensors, optimizer_meta = optimizer_to_checkpoint(optimizer.optimizer)
            rng_tensors, rng_meta = rng_to_checkpoint()
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            path = save_checkpoint(checkpoints_dir, Checkpoint(
                step=step, config=config.to_dict(),
                tensors={"model": model.state_dict(), "ema": ema.shadow.state_dict(),
                         "optimizer": optimizer_tensors, "rng": rng_tensors},
                meta={"ema": ema.state_dict(), "optimizer": optimizer_meta, "rng": rng_meta, "scaler": scaler,
                      "image_channels": dataset.channels, "train_seconds": train_seconds,
                      "images_seen": step * config.batch_size, "processes": world}),
                keep=config.keep_checkpoints)
            save_sample_grid(step)
        accelerator.wait_for_everyone()
        return path

    def save_sample_grid(step: int) -> None:
        generator = torch.Generator(device).manual_seed(config.seed)
        noise = torch.randn(config.grid_images, dataset.channels, config.image_size, config.image_size,
                            device=device, generator=generator)
        with accelerator.autocast():
            images = sample_ddim(make_denoiser(ema.shadow, schedule, config.objective, config.clip), noise,
                                 schedule, steps=min(config.grid_sampler_steps, config.timesteps))
        save_grid(to_uint8(images), samples_dir / f"step-{step:08d}.png")

    # ---- 5. Train ----------------------------------------------------------------------------------------
    batches = iter(BatchStream(dataset, per_process_batch, seed=config.seed, start_step=start_step, device=device,
                               rank=rank, world_size=world, workers=None if config.workers < 0 else config.workers))
    step, stopped_by, last_checkpoint = start_step, "steps", None
    loss_sum, loss_count, non_finite = torch.zeros((), device=device), 0, torch.zeros((), dtype=torch.bool, device=device)
    interval_start = time.monotonic()
    interval_step, images_per_second = step, 0.0
    bar = tqdm(total=config.steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
               disable=not (progress and is_main))
    network.train()
    while step < config.steps:
        # Phase 5a: one optimisation step over --grad-accum micro-batches.
        lr = learning_rate(config, step, time.monotonic() - started)  # --max-minutes counts per run, too
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator(device).manual_seed(step_seed(config.seed, step, rank, 0))
        images = next(batches).to(dtype=torch.float32).div_(127.5).sub_(1.0)
        images = augment_batch(images, generator, config.hflip, config.rotate_degrees, config.jitter)
        images = images.contiguous(memory_format=memory_format)
        for index, micro in enumerate(images.split(micro_batch)):
            final_micro = index == config.grad_accum - 1
            with accelerator.no_sync(network) if not final_micro else nullcontext():
                if cuda_graphs:  # a new iteration: the graphs may reuse the last step's output memory
                    torch.compiler.cudagraph_mark_step_begin()
                with accelerator.autocast():
                    loss = loss_fn(network, micro, generator)
                accelerator.backward(loss / config.grad_accum)
            loss_sum += loss.detach()
            non_finite |= ~torch.isfinite(loss.detach())
            loss_count += 1
        if config.grad_clip > 0:
            accelerator.clip_grad_norm_(network.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        ema.update(model, step)
        bar.update(1)

        # Phase 5b: log, check for divergence, checkpoint; the only host syncs of the loop.
        out_of_time = config.max_minutes > 0 and time.monotonic() - started >= config.max_minutes * 60
        if step % config.log_every == 0 or step % config.save_every == 0 or step == config.steps or out_of_time:
            if bool(non_finite):
                bar.close()
                raise NonFiniteLossError(
                    f"the loss became NaN or infinite before step {step}; stopped. The last good checkpoint "
                    f"({_latest_or_none(checkpoints_dir)}) is kept. Try a lower --lr, --grad-clip 1, or "
                    "--mixed-precision no/bf16 instead of fp16.")
            now = time.monotonic()
            images_per_second = (step - interval_step) * config.batch_size / max(now - interval_start, 1e-9)
            loss_value = (loss_sum / max(loss_count, 1)).item()
            bar.set_postfix(loss=f"{loss_value:.4f}", img_s=f"{images_per_second:.0f}")
            if log is not None:
                log.write({"step": step, "loss": loss_value, "lr": lr,
                           "images_per_second": images_per_second, "seconds": elapsed_before + now - started})
            loss_sum.zero_()
            loss_count, interval_start, interval_step = 0, now, step
        if step % config.save_every == 0 or step == config.steps or out_of_time:
            last_checkpoint = save(step, elapsed_before + time.monotonic() - started)
        if out_of_time:
            stopped_by = "time"
            break
    bar.close()

    # ---- 6. Wrap up ---------------------------------------------------------------------------------------
    if is_main and log is not None:
        plot_loss_curve(log.read(), run_dir / "loss.png")
        summary = {"step": step, "stopped_by": stopped_by, "checkpoint": str(last_checkpoint),
                   "train_seconds": elapsed_before + time.monotonic() - started, "processes": world,
                   "images_per_process_per_step": per_process_batch, "device": str(device),
                   "mixed_precision": accelerator.mixed_precision}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return TrainResult(run_dir, step, last_checkpoint, images_per_second, stopped_by)


def _optimizer_kernel(device: torch.device) -> dict:
    """Fused AdamW on CUDA (one kernel for all parameters); multi-tensor foreach elsewhere."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


def _latest_or_none(folder: Path) -> str:
    try:
        return str(find_checkpoint(folder))
    except DataError:
        return "none written yet"

