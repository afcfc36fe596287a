"""The training loop: one readable function in commented phases (after EDM's training_loop.py).

It does not know which model it trains: the run's model family (`--model`, difflab.families)
builds a trainer that owns the networks, optimisers, losses and the optimisation step, and the
loop drives it. What every run has is here: devices and processes, data and augmentation, the
step and time budgets, checkpoints and exact resume, the metrics log, preview grids, progress.

Determinism: the data order, augmentation and diffusion noise of step s depend only on
(seed, s, process rank), never on how many steps ran before in this process, so training
N steps, stopping, resuming and training M more gives the same weights as N + M straight.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm

from difflab.config import RunOptions
from difflab.data import BatchStream, augment_batch, load_dataset
from difflab.data.holdout import split_holdout
from difflab.errors import OPTION, ConfigError, DataError
from difflab.families import StepContext, get_family
from difflab.training.checkpoint import (Checkpoint, checkpoint_step, clean_orphaned_temp_files, find_checkpoint,
                                         load_checkpoint, rng_from_checkpoint, rng_to_checkpoint, save_checkpoint)
from difflab.training.run_lock import RunLock
from difflab.training.metrics_log import MetricsLog, plot_training_curves
from difflab.training.monitor import BEST_FOLDER, MonitorSettings, QualityMonitor, monitor_extractor, write_holdout_list
from difflab.training.trackers import Trackers, accelerator_arguments
from difflab.training.speed import (compile_cache, memory_format_for, resolve_mixed_precision, set_cudnn_benchmark,
                                   should_compile, use_cuda_graphs)
from difflab.viz.grid import save_grid, to_uint8


EVAL_SHARE_WARNING = 0.10  # the monitor's cost bound: a warning once evaluations exceed this share of the run


class TrainingStopped(RuntimeError):
    """Training stopped before its budget because it went wrong; the last good checkpoint is kept."""


class NonFiniteLossError(TrainingStopped):
    """Training diverged: a logged value became NaN or infinite."""


class TrainingCollapsed(TrainingStopped):
    """The model family's health check failed (e.g. a GAN's discriminator saturated)."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    images_per_second: float
    stopped_by: str  # "steps" | "time" | "early_stop"
    best_checkpoint: Path | None = None  # --keep-best: the best-scoring checkpoint
    monitor: dict | None = None  # --eval-every: summary.json's "monitor" entry


def format_duration(seconds: float) -> str:
    """A duration as a person says it: '45 s', '7 min 12 s' (under 10 minutes), '38 min', '3 h 10 min'."""
    seconds = max(0.0, float(seconds))
    if seconds < 59.5:
        return f"{max(1, round(seconds))} s"
    if seconds < 599.5:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def eta_message(step: int, steps: int, seconds_per_step: float, max_minutes: float = 0.0,
                run_seconds: float = 0.0) -> str:
    """The time the rest of a run takes at the measured rate: 'about 3 h 10 min at this rate for the
    remaining 19,900 steps (0.57 s a step)', and when its time limit (`max_minutes`, of which
    `run_seconds` are spent) ends it first, when and near which step."""
    remaining = max(0, steps - step)
    needed = remaining * seconds_per_step
    text = (f"about {format_duration(needed)} at this rate for the remaining {remaining:,} steps "
            f"({seconds_per_step:.3g} s a step)")
    if max_minutes > 0:
        left = max(0.0, max_minutes * 60 - run_seconds)
        if left < needed:
            stop_step = step + int(left / seconds_per_step) if seconds_per_step > 0 else steps
            text += (f"; the time limit of {max_minutes:g} min stops it first, in about {format_duration(left)}, "
                     f"near step {stop_step:,}")
    return text


ETA_MIN_STEPS, ETA_MIN_SECONDS = 10, 20.0
"""The ETA is measured from the first log interval's end (past start-up: compilation, workers,
caches) over at least this many steps and seconds, as the median of the log intervals' rates
(so one slow interval, another program's or a checkpoint's, does not set it), and printed once,
at a log interval's end."""


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A distinct, reproducible seed for each (step, process, random stream)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + stream) % (2**63 - 1)


def train(config: RunOptions, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the run that `config` describes (resuming its latest checkpoint with `resume`). The
    main process holds the run folder's lock for the whole job: two processes never write one run."""
    family = get_family(config.model)
    config.resolve()  # `auto` options get their values, which the run folder and checkpoints then record
    family.check(config)  # inconsistent network options fail before the data is read
    if not PartialState(cpu=not torch.cuda.is_available()).is_main_process:
        return _train(config, family, resume, progress)
    with RunLock(config.out):
        clean_orphaned_temp_files(Path(config.out) / "checkpoints")  # of earlier processes that died mid-write
        return _train(config, family, resume, progress)


def _train(config: RunOptions, family, resume: bool, progress: bool) -> TrainResult:
    run_dir = Path(config.out)
    checkpoints_dir, samples_dir = run_dir / "checkpoints", run_dir / "samples"

    # ---- 1. Devices and processes ------------------------------------------------------------------
    # Without CUDA, tell accelerate so: under a multi-process launcher it then trains on the CPUs
    # with gloo (accelerate picks MULTI_CPU only when cpu=True).
    cpu_only = not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=cpu_only,
        mixed_precision=resolve_mixed_precision(config.mixed_precision, PartialState(cpu=cpu_only).device),
        gradient_accumulation_steps=1,  # a family accumulates by hand, per optimisation step
        **accelerator_arguments(config.logger, run_dir),
    )
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    grad_accum = getattr(config, "grad_accum", 1)
    if config.batch_size % (world * grad_accum):
        raise ConfigError(f"{OPTION} {config.batch_size} must be divisible by processes x {{option:grad_accum}} "
                          f"({world} x {grad_accum})", option="batch_size")
    torch.manual_seed(config.seed)

    # ---- 2. Data -------------------------------------------------------------------------------------
    dataset = load_dataset(config.data, image_size=config.image_size, channels=config.image_channels,
                           root=config.data_root or None, max_images=config.max_images or None,
                           progress=progress and is_main)
    dataset, held_out = split_holdout(dataset, config.holdout, config.seed, min_train=config.batch_size)
    dataset.require_at_least(config.batch_size, option="batch_size")

    # ---- 3. The family's networks, optimisers and losses, built from the options ----------------------
    trainer = family.trainer(config, dataset.channels, device)
    memory_format = memory_format_for(config, device)
    set_cudnn_benchmark(config, device)

    # ---- 4. Resume -------------------------------------------------------------------------------------
    start_step, elapsed_before = 0, 0.0
    if resume:
        checkpoint = load_checkpoint(checkpoints_dir)  # the newest readable one, with a warning past a bad one
        trainer.load_state(checkpoint.tensors, checkpoint.meta)
        rng_from_checkpoint(checkpoint.tensors["rng"], checkpoint.meta["rng"])
        start_step, elapsed_before = checkpoint.step, float(checkpoint.meta.get("train_seconds", 0.0))
        if is_main:
            print(f"difflab: resuming {run_dir} from step {start_step}")

    per_process_batch = config.batch_size // world
    micro_batch = per_process_batch // grad_accum
    # in the batches' layout: a compiled graph is specialised on its example's strides
    example = torch.zeros(micro_batch, dataset.channels, config.image_size, config.image_size, device=device
                          ).contiguous(memory_format=memory_format)
    started = time.monotonic()  # the --max-minutes budget includes compilation
    compiling = should_compile(config.compile, device, config.steps - start_step, config.max_minutes)
    cuda_graphs = use_cuda_graphs(config.cuda_graphs, compiling, device, world)
    # compile under the training step's autocast (or it compiles twice), with the --compile-cache folder
    with compile_cache(config.compile_cache, enabled=compiling) as cache, accelerator.autocast():
        compiled = trainer.prepare(accelerator.prepare, example, compiling, cuda_graphs)
    if compiled and is_main:  # the family says what it compiled; a GAN under --compile auto stays eager
        print(f"difflab: compiled the network ({compiled}) in {time.monotonic() - started:.1f} s; "
              f"compile cache: {cache or 'off'}")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json() + "\n")
    log = MetricsLog(run_dir / "metrics.jsonl", resume_step=start_step if resume else None) if is_main else None
    trackers = Trackers(accelerator, config.logger, run_dir.name, config.to_dict())

    # ---- 4b. The quality monitor (--eval-every): the training set's statistics, once per run --------
    monitor = None
    if is_main and held_out is not None:
        write_holdout_list(run_dir, held_out)
    settings = MonitorSettings.from_options(config)
    if settings.enabled and is_main:
        monitor = QualityMonitor(settings, run_dir, lambda: monitor_extractor(settings.features, device), device,
                                 seed=config.seed, progress=progress)
        if resume:
            monitor.load_state_dict(checkpoint.meta.get("monitor"), start_step)
        monitor.prepare(dataset, held_out)

    def save(step: int, train_seconds: float, folder: Path = checkpoints_dir, keep: int = config.keep_checkpoints,
             grid: bool = True) -> Path | None:
        path = None
        if is_main:
            tensors, meta = trainer.state()
            rng_tensors, rng_meta = rng_to_checkpoint()
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            path = save_checkpoint(folder, Checkpoint(
                step=step, config=config.to_dict(), tensors={**tensors, "rng": rng_tensors},
                meta={**meta, "family": family.name, "rng": rng_meta, "scaler": scaler,
                      "image_channels": dataset.channels, "train_seconds": train_seconds,
                      "images_seen": step * config.batch_size, "processes": world,
                      **({"monitor": monitor.state_dict()} if monitor is not None else {})}),
                keep=keep)
            if grid and config.grid_images > 0:
                with torch.no_grad(), accelerator.autocast():
                    images = trainer.preview(config.grid_images, config.seed)
                grid_image = to_uint8(images)
                save_grid(grid_image, samples_dir / f"step-{step:08d}.png")
                trackers.grid("samples", _grid_array(grid_image), step)
        accelerator.wait_for_everyone()
        return path

    def make_images(count: int, seed: int) -> torch.Tensor:  # the monitor's samples: EMA weights, uint8
        with torch.no_grad(), accelerator.autocast():
            return to_uint8(trainer.preview(count, seed, steps=config.eval_sampler_steps or None,
                                            sampler=config.eval_sampler))

    # ---- 5. Train ----------------------------------------------------------------------------------------
    batches = iter(BatchStream(dataset, per_process_batch, seed=config.seed, start_step=start_step, device=device,
                               rank=rank, world_size=world, workers=None if config.workers < 0 else config.workers))
    step, stopped_by, last_checkpoint, best_checkpoint = start_step, "steps", None, None
    eval_cost_warned = False
    sums: dict[str, torch.Tensor] = {}
    interval_count, non_finite = 0, torch.zeros((), dtype=torch.bool, device=device)
    interval_start = time.monotonic()
    interval_step, images_per_second = step, 0.0
    eta_from: tuple[int, float] | None = None  # (step, time) the ETA is measured from; None until then
    eta_rates: list[float] = []  # seconds per step of each log interval since then
    eta_shown = False
    bar = tqdm(total=config.steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
               disable=not (progress and is_main))
    while step < config.steps:
        # Phase 5a: one optimisation step, taken by the family. Its randomness comes only from
        # the step's generator, seeded by (seed, step, rank).
        generator = torch.Generator(device).manual_seed(step_seed(config.seed, step, rank, 0))
        images = next(batches).to(dtype=torch.float32).div_(127.5).sub_(1.0)
        images = augment_batch(images, generator, config.hflip, config.rotate_degrees, config.jitter)
        images = images.contiguous(memory_format=memory_format)
        context = StepContext(step=step, run_seconds=time.monotonic() - started, generator=generator,
                              autocast=accelerator.autocast, backward=accelerator.backward,
                              no_sync=accelerator.no_sync, clip_grad_norm=accelerator.clip_grad_norm_)
        values = trainer.train_step(images, context)
        for name, value in values.items():
            sums[name] = sums[name] + value if name in sums else value.clone()
            non_finite |= ~torch.isfinite(value)
        interval_count += 1
        step += 1
        bar.update(1)

        # Phase 5b: log, check for divergence or collapse, checkpoint; the only host syncs of the loop.
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
            averages = {name: (total / max(interval_count, 1)).item() for name, total in sums.items()}
            stop_reason = trainer.after_log(averages, step)
            if stop_reason:
                bar.close()
                raise TrainingCollapsed(f"{stop_reason} at step {step}; stopped. The last good checkpoint "
                                        f"({_latest_or_none(checkpoints_dir)}) is kept.")
            bar.set_postfix({**{name: f"{value:.4f}" for name, value in list(averages.items())[:3]},
                             "img_s": f"{images_per_second:.0f}"})
            if log is not None:
                record = {"step": step, **averages, **trainer.log_state(),
                          "images_per_second": images_per_second, "seconds": elapsed_before + now - started}
                log.write(record)
                trackers.scalars({k: v for k, v in record.items() if k != "step"}, step)
            if not eta_shown and step < config.steps and not out_of_time:
                if eta_from is None:
                    eta_from = (step, now)  # the first interval held the start-up
                else:
                    eta_rates.append((now - interval_start) / max(1, step - interval_step))
                    if step - eta_from[0] >= ETA_MIN_STEPS and now - eta_from[1] >= ETA_MIN_SECONDS:
                        eta_shown = True
                        if is_main:  # printed with or without progress bars: it is what the user waits for
                            tqdm.write("difflab: " + eta_message(step, config.steps, statistics.median(eta_rates),
                                                                 config.max_minutes, now - started))
            sums = {}
            interval_count, interval_start, interval_step = 0, now, step
        if step % config.save_every == 0 or step == config.steps or out_of_time:
            last_checkpoint = save(step, elapsed_before + time.monotonic() - started)

        # Phase 5c: the quality monitor, on the main process; every process follows its verdict.
        stop_early = False
        if settings.enabled and step % settings.every_steps == 0:
            improved = False
            if monitor is not None:
                evaluation = monitor.evaluate(make_images, step, elapsed_before + time.monotonic() - started)
                log.write({"step": step, "eval": evaluation.record})
                trackers.scalars({f"eval/{k}": v for k, v in evaluation.record.items() if k != "step"}, step)
                bar.write(_describe_evaluation(evaluation.record))
                improved, stop_early = evaluation.improved, evaluation.stop is not None
                if evaluation.record["eval_share"] > EVAL_SHARE_WARNING and not eval_cost_warned:
                    eval_cost_warned = True
                    bar.write(f"difflab: warning: evaluations took {evaluation.record['eval_share']:.0%} of the run "
                              "so far; raise --eval-every, or lower --eval-images or --eval-sampler-steps")
                if stop_early:
                    bar.write(f"difflab: stopping early: {evaluation.stop}")
            improved, stop_early = _agree([improved, stop_early], accelerator)
            if settings.keep_best and improved:
                best_checkpoint = save(step, elapsed_before + time.monotonic() - started,
                                       folder=checkpoints_dir / BEST_FOLDER, keep=1, grid=False)
            if stop_early and last_checkpoint_step(last_checkpoint) != step:
                last_checkpoint = save(step, elapsed_before + time.monotonic() - started)
        if stop_early:
            stopped_by = "early_stop"
            break
        if out_of_time:
            stopped_by = "time"
            break
    bar.close()

    # ---- 6. Wrap up ---------------------------------------------------------------------------------------
    monitor_summary = None
    if is_main and log is not None:
        plot_training_curves(log.read(), run_dir / "loss.png")
        summary = {"step": step, "stopped_by": stopped_by, "checkpoint": str(last_checkpoint), "model": family.name,
                   "train_seconds": elapsed_before + time.monotonic() - started, "processes": world,
                   "images_per_process_per_step": per_process_batch, "device": str(device),
                   "mixed_precision": accelerator.mixed_precision}
        if monitor is not None:
            monitor.plot(run_dir / "quality.png")
            monitor_summary = {**monitor.summary(),
                               "best_checkpoint": str(best_checkpoint) if best_checkpoint else None}
            summary["monitor"] = monitor_summary
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    trackers.close()
    accelerator.end_training()
    return TrainResult(run_dir, step, last_checkpoint, images_per_second, stopped_by, best_checkpoint, monitor_summary)


def _agree(flags: list[bool], accelerator: Accelerator) -> list[bool]:
    """The main process's decisions, known to every process (one tiny broadcast when there are several)."""
    if accelerator.num_processes == 1:
        return flags
    from accelerate.utils import broadcast
    return [bool(v) for v in broadcast(torch.tensor(flags, device=accelerator.device), from_process=0).tolist()]


def last_checkpoint_step(path: Path | None) -> int:
    return -1 if path is None else checkpoint_step(path)


def _describe_evaluation(record: dict) -> str:
    parts = [f"step {record['step']}: FD {record['fd']:.4g}"]
    if "kid" in record:
        parts.append(f"KID {record['kid']:.4g} ± {record['kid_std']:.2g}")
    if "near_copy_rate" in record:
        parts.append(f"near copies {record['near_copy_rate']:.1%} (held-out real images "
                     f"{record['holdout_near_copy_rate']:.1%})")
    if "data_copying_z" in record:
        parts.append(f"data-copying Z_U {record['data_copying_z']:.1f}")
    best = " (best so far)" if record.get("best_step") == record["step"] else f" (best: step {record.get('best_step')})"
    return f"difflab: monitor, {', '.join(parts)}{best}; {record['seconds']:.1f} s, {record['eval_share']:.1%} of the run"


def _grid_array(images: torch.Tensor):
    """The saved preview grid as one (H, W, C) uint8 array, for the trackers."""
    import numpy as np
    from difflab.viz.grid import make_grid
    return np.asarray(make_grid(images).convert("RGB"))


def _latest_or_none(folder: Path) -> str:
    try:
        return str(find_checkpoint(folder))
    except DataError:
        return "none written yet"

