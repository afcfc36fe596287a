#!/usr/bin/env python3
"""Peer benchmark: lucidrains' denoising-diffusion-pytorch (DDP), configured as its README does.

Why this script exists: difflab is measured side by side against the peers in the
same session on the same GPU. This file runs DDP the way a user following DDP's
README would, so that the comparison is against the peer's intended setup and
not against a strawman:

    Unet(dim=64, dim_mults=(1, 2, 4, 8), flash_attn=True)
    GaussianDiffusion(model, image_size=64, timesteps=1000, sampling_timesteps=50)
      (DDP defaults kept: objective='pred_v', beta_schedule='sigmoid', ddim eta 0,
       auto_normalize=True, i.e. it takes images in [0, 1] and maps them to [-1, 1] itself)
    Adam(lr=8e-5, betas=(0.9, 0.99)), grad-norm clip 1.0          (Trainer defaults)
    EMA(beta=0.995, update_every=10)  (ema_pytorch defaults: update_after_step=100, warm-up)
    bf16 autocast, batch 64

A plain loop replaces DDP's `Trainer` because the Trainer needs torchvision
transforms, DataLoader workers and accelerate's wrapper, none of which is what
is being measured; the loop does the same optimisation step (forward = loss,
backward, clip, Adam step, zero_grad, EMA update, loss.item() every step as the
Trainer's progress bar does). Images are decoded once into GPU memory with
random horizontal flips, as the Trainer's `augment_horizontal_flip=True`.

Modes (each ends with one `RESULT {json}` line on stdout):
    train        --data X.zip --minutes 8 --batch 64 --out DIR
    bench-train  --batch 64 --steps 50 --warmup 10 [--precision bf16|tf32|fp32]
    bench-sample --n 1000 --batch 250 --steps 50              (DDIM-50)
    bench-sample --n 1000 --batch 250 --steps 1000 --sampler ddpm   (DDPM-1000)
    max-batch    --image-size 64|128

Needs: denoising-diffusion-pytorch (2.3.4 was read when writing this), ema-pytorch,
torchvision (DDP imports it), einops, accelerate, scipy. See benchmarks/README.md
for the wheels and the install line on the device machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # DDP's samplers draw a tqdm bar per call; keep logs small

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_common as pc  # noqa: E402

PEER = "denoising-diffusion-pytorch"
README_CONFIG: dict[str, Any] = {
    "unet": {"dim": 64, "dim_mults": (1, 2, 4, 8), "flash_attn": True},
    "diffusion": {"timesteps": 1000, "sampling_timesteps": 50},
    "optimizer": {"name": "Adam", "lr": 8e-5, "betas": (0.9, 0.99), "max_grad_norm": 1.0},
    "ema": {"beta": 0.995, "update_every": 10},
}


# --------------------------------------------------------------------------------------------
# The peer
# --------------------------------------------------------------------------------------------
def import_ddp() -> Any:
    """Import lazily so that `--help` and py_compile work where DDP (or torchvision) is missing."""
    try:
        import denoising_diffusion_pytorch as ddp
        import denoising_diffusion_pytorch.denoising_diffusion_pytorch as ddp_impl
    except ImportError as exc:
        raise SystemExit(f"cannot import denoising_diffusion_pytorch ({exc}); install the wheels from .whl "
                         "(see benchmarks/README.md)") from exc
    # Belt and braces for old tqdm versions that ignore TQDM_DISABLE.
    from functools import partial
    from tqdm.auto import tqdm
    ddp_impl.tqdm = partial(tqdm, disable=True)
    return ddp


def ddp_version() -> str:
    try:
        from importlib.metadata import version
        return version("denoising-diffusion-pytorch")
    except Exception:  # noqa: BLE001 - version is informational only
        return "unknown"


def build_diffusion(image_size: int, sampling_timesteps: int | None, device: torch.device) -> torch.nn.Module:
    """The README's model. sampling_timesteps < timesteps switches `.sample()` to DDIM;
    None (= timesteps) makes `.sample()` the ancestral DDPM loop over all 1000 steps."""
    ddp = import_ddp()
    unet = ddp.Unet(**README_CONFIG["unet"])
    diffusion = ddp.GaussianDiffusion(
        unet,
        image_size=image_size,
        timesteps=README_CONFIG["diffusion"]["timesteps"],
        sampling_timesteps=sampling_timesteps,
    )
    return diffusion.to(device)


def allow_fp32_attention(diffusion: torch.nn.Module) -> bool:
    """DDP's `Attend(flash=True)` restricts SDPA to the FlashAttention backend on any GPU newer
    than sm_80 (H100: sm_90), and FlashAttention has no fp32 kernel: in fp32/tf32 every
    attention call fails with "No available kernel" (DDP issue #239). For tf32/fp32 runs we
    add the memory-efficient and math backends, which is what the flag would mean to a
    user. Returns whether anything was changed (recorded in the result)."""
    from denoising_diffusion_pytorch.attend import AttentionConfig
    from torch.nn.attention import SDPBackend

    changed = False
    for module in diffusion.modules():
        if type(module).__name__ == "Attend" and getattr(module, "cuda_config", None) is not None:
            module.cuda_config = AttentionConfig([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                                  SDPBackend.MATH])
            changed = True
    return changed


class TrainLoop:
    """One optimisation step exactly as DDP's Trainer.train() does it (without accelerate)."""

    def __init__(self, diffusion: torch.nn.Module, device: torch.device, precision: str,
                 with_ema: bool = True) -> None:
        from ema_pytorch import EMA

        cfg = README_CONFIG["optimizer"]
        self.diffusion = diffusion
        self.device = device
        self.precision = precision
        self.opt = torch.optim.Adam(diffusion.parameters(), lr=cfg["lr"], betas=cfg["betas"])
        self.max_grad_norm = cfg["max_grad_norm"]
        self.ema = EMA(diffusion, **README_CONFIG["ema"]).to(device) if with_ema else None

    def step(self, images: torch.Tensor) -> torch.Tensor:
        self.diffusion.train()
        with pc.autocast(self.device, self.precision):
            loss = self.diffusion(images)  # GaussianDiffusion.forward: normalises [0,1]->[-1,1], returns the loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), self.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad()
        if self.ema is not None:
            self.ema.update()  # counts steps itself; averages every 10th (copies until step 100)
        return loss.detach()


@torch.inference_mode()
def sample(diffusion: torch.nn.Module, n: int, batch: int, device: torch.device, precision: str) -> torch.Tensor:
    """`n` images in [0, 1] (on the CPU), in batches. Sampling runs under the same autocast as
    training: with flash_attn=True on an sm_90 GPU, fp32 sampling has no attention kernel."""
    diffusion.eval()
    out = []
    for size in pc.groups(n, batch):
        with pc.autocast(device, precision):
            images = diffusion.sample(batch_size=size)
        out.append(images.float().clamp_(0, 1).cpu())
    return torch.cat(out)


def sampler_name(diffusion: torch.nn.Module) -> str:
    return f"ddim-{diffusion.sampling_timesteps}" if diffusion.is_ddim_sampling else f"ddpm-{diffusion.num_timesteps}"


def describe(diffusion: torch.nn.Module, image_size: int, precision: str, batch: int) -> dict[str, Any]:
    return {
        "peer": PEER,
        "peer_version": ddp_version(),
        "config": {**README_CONFIG,
                   "diffusion": {"timesteps": diffusion.num_timesteps,
                                 "sampling_timesteps": diffusion.sampling_timesteps},
                   "image_size": image_size, "precision": precision, "batch": batch,
                   "objective": diffusion.objective,
                   "beta_schedule": "sigmoid (DDP default)",
                   "ddim_eta": diffusion.ddim_sampling_eta},
        "parameters": pc.count_parameters(diffusion.model),
    }


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Train for a wall-clock budget, then sample from the EMA model and save what the FD
    evaluation reads. The budget clock starts after the data is decoded and the model is
    built; it includes the first (slow) steps, as a user's run would."""
    out = Path(args.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    images = pc.load_images(args.data, args.image_size, args.max_images)
    load_s = time.perf_counter() - t0
    print(f"decoded {len(images)} images of {args.image_size}px in {load_s:.1f}s", flush=True)

    data = pc.InMemoryBatches(images, args.batch, device, hflip=True, seed=args.seed)
    diffusion = build_diffusion(args.image_size, args.sample_steps, device)
    fp32_attn = allow_fp32_attention(diffusion) if args.precision != "bf16" else False
    loop = TrainLoop(diffusion, device, args.precision)

    budget_s = args.minutes * 60.0
    metrics_path = out / "metrics.jsonl"
    steps, interval_loss, interval_n, last_loss = 0, 0.0, 0, None
    steady_from_step, steady_t0 = args.steady_after, None
    pc.reset_peak_memory(device)
    pc.sync(device)
    start = time.perf_counter()
    elapsed = 0.0
    with metrics_path.open("w") as metrics:
        while elapsed < budget_s and (args.max_steps == 0 or steps < args.max_steps):
            loss = loop.step(data.next()).item()  # the Trainer reads the loss every step
            steps += 1
            interval_loss += loss
            interval_n += 1
            elapsed = time.perf_counter() - start
            if steps == steady_from_step:
                steady_t0 = time.perf_counter()
            done = elapsed >= budget_s or steps == args.max_steps
            if steps % args.log_every == 0 or done:
                last_loss = interval_loss / interval_n
                metrics.write(json.dumps({"step": steps, "loss": last_loss, "elapsed_s": round(elapsed, 3),
                                          "images_per_s": steps * args.batch / elapsed}) + "\n")
                metrics.flush()
                print(f"step {steps} loss {last_loss:.4f} {elapsed:.0f}s", flush=True)
                interval_loss, interval_n = 0.0, 0
    pc.sync(device)
    train_s = time.perf_counter() - start
    steady = None
    if steady_t0 is not None and steps > steady_from_step:
        steady = (steps - steady_from_step) * args.batch / (time.perf_counter() - steady_t0)
    train_memory = pc.memory_report(device, args.batch)

    # Sampling: DDIM from the EMA model, as the Trainer samples.
    ema_model = loop.ema.ema_model
    pc.sync(device)
    t1 = time.perf_counter()
    samples = sample(ema_model, args.n_samples, args.sample_batch, device, args.precision)
    pc.sync(device)
    sample_s = time.perf_counter() - t1
    pc.save_images(samples, out / "samples", quality=95)
    pc.save_grid(samples[:64], out / "grid.png", nrow=8)

    result = {
        "mode": "train",
        **describe(diffusion, args.image_size, args.precision, args.batch),
        "data": str(args.data),
        "data_images": len(images),
        "data_load_s": load_s,
        "budget_minutes": args.minutes,
        "steps": steps,
        "images_seen": steps * args.batch,
        "train_s": train_s,
        "images_per_s": steps * args.batch / train_s,
        "images_per_s_after_warmup": steady,
        "steady_after_steps": steady_from_step,
        "final_loss": last_loss,
        "fp32_attention_backends_added": fp32_attn,
        "train_memory": train_memory,
        "sampler": sampler_name(ema_model),
        "sample_n": len(samples),
        "sample_batch": args.sample_batch,
        "sample_s": sample_s,
        "sample_images_per_s": len(samples) / sample_s,
        "samples_dir": str(out / "samples"),
        **pc.device_info(device),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=pc._json_default))
    return result


def cmd_bench_train(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Training throughput on random images (no data pipeline): median of synchronised steps."""
    torch.manual_seed(args.seed)
    diffusion = build_diffusion(args.image_size, None, device)
    fp32_attn = allow_fp32_attention(diffusion) if args.precision != "bf16" else False
    loop = TrainLoop(diffusion, device, args.precision, with_ema=not args.no_ema)
    images = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)

    pc.sync(device)
    weights_bytes = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    for _ in range(args.warmup):  # also allocates Adam's state
        loop.step(images)
    pc.sync(device)
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    pc.reset_peak_memory(device)
    times = pc.time_steps(lambda: loop.step(images), args.steps, 0, device)
    pipelined = pc.time_pipelined(lambda: loop.step(images), args.steps, device)
    return {
        "mode": "bench-train",
        **describe(diffusion, args.image_size, args.precision, args.batch),
        "steps": args.steps,
        "warmup": args.warmup,
        "ema": not args.no_ema,
        "fp32_attention_backends_added": fp32_attn,
        **pc.step_stats(times, args.batch),
        **pc.pipelined_stats(pipelined, args.batch),
        **pc.memory_report(device, args.batch, baseline),
        "weights_memory_bytes": weights_bytes,
        **pc.device_info(device),
    }


def cmd_bench_sample(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Sampling speed of DDIM-k or DDPM-1000 with freshly initialised weights (speed does not
    depend on the weights). One warm-up batch of the same shape (with `--warmup-steps` DDIM
    steps, as the network calls are identical) is excluded from the timing."""
    T = README_CONFIG["diffusion"]["timesteps"]
    if args.sampler == "ddpm":
        if args.steps != T:
            raise SystemExit(f"DDP's DDPM sampler always runs all {T} steps; use --steps {T} with --sampler ddpm")
        sampling_timesteps = None  # = timesteps -> GaussianDiffusion.sample() uses p_sample_loop
    else:
        if not 0 < args.steps < T:
            raise SystemExit(f"DDIM needs 0 < --steps < {T} (DDP switches to DDIM only when "
                             "sampling_timesteps < timesteps)")
        sampling_timesteps = args.steps
    torch.manual_seed(args.seed)
    diffusion = build_diffusion(args.image_size, sampling_timesteps, device)
    fp32_attn = allow_fp32_attention(diffusion) if args.precision != "bf16" else False

    # Warm-up: same batch shape through the same network, with a short DDIM schedule.
    saved = (diffusion.sampling_timesteps, diffusion.is_ddim_sampling)
    diffusion.sampling_timesteps, diffusion.is_ddim_sampling = min(args.warmup_steps, T - 1), True
    sample(diffusion, args.batch, args.batch, device, args.precision)
    diffusion.sampling_timesteps, diffusion.is_ddim_sampling = saved

    pc.reset_peak_memory(device)
    pc.sync(device)
    start = time.perf_counter()
    images = sample(diffusion, args.n, args.batch, device, args.precision)
    pc.sync(device)
    seconds = time.perf_counter() - start
    return {
        "mode": "bench-sample",
        **describe(diffusion, args.image_size, args.precision, args.batch),
        "sampler": sampler_name(diffusion),
        "n": len(images),
        "seconds": seconds,
        "images_per_s": len(images) / seconds,
        "network_evaluations": args.steps * len(pc.groups(args.n, args.batch)),
        "fp32_attention_backends_added": fp32_attn,
        **pc.memory_report(device, args.batch),
        **pc.device_info(device),
    }


def cmd_max_batch(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Largest training batch that fits (two full steps incl. Adam state and EMA), doubling
    from --start and then trying 1.5x the last fit."""
    if device.type != "cuda":
        raise SystemExit("max-batch needs a GPU")
    torch.manual_seed(args.seed)
    diffusion = build_diffusion(args.image_size, None, device)
    fp32_attn = allow_fp32_attention(diffusion) if args.precision != "bf16" else False
    loop = TrainLoop(diffusion, device, args.precision)
    peaks: dict[int, int] = {}

    def fits(batch: int) -> bool:
        ok = False
        try:
            pc.reset_peak_memory(device)
            images = torch.rand(batch, 3, args.image_size, args.image_size, device=device)
            for _ in range(2):
                loop.step(images)
            pc.sync(device)
            peaks[batch] = torch.cuda.max_memory_allocated(device)
            ok = True
        except torch.cuda.OutOfMemoryError:
            pass  # leave the except block first, so the traceback's tensors can be freed
        images = None
        loop.opt.zero_grad(set_to_none=True)
        pc.free_memory(device)
        return ok

    best = pc.find_max_batch(fits, args.start, args.cap, log=lambda m: print(m, flush=True))
    peak = peaks.get(best)
    return {
        "mode": "max-batch",
        **describe(diffusion, args.image_size, args.precision, best),
        "max_batch": best,
        "cap": args.cap,
        "fitting_batches": sorted(peaks),
        "peak_memory_bytes": peak,
        "peak_memory_gib": round(peak / 2**30, 3) if peak else None,
        "peak_memory_mib_per_image": round(peak / best / 2**20, 3) if peak else None,
        "peak_by_batch_gib": {b: round(p / 2**30, 3) for b, p in sorted(peaks.items())},
        "fp32_attention_backends_added": fp32_attn,
        **pc.device_info(device),
    }


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto", help="auto (GPU if present), cuda or cpu")
    common.add_argument("--precision", default="bf16", choices=("bf16", "tf32", "fp32"),
                        help="bf16 autocast (the README's amp, in bf16) or plain fp32 with/without TF32")
    common.add_argument("--image-size", type=int, default=64)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    sub = parser.add_subparsers(dest="mode", required=True)

    p = sub.add_parser("train", parents=[common], help="train for a time budget, then sample 1000 images")
    p.add_argument("--data", required=True, help="image folder or .zip archive")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget")
    p.add_argument("--max-steps", type=int, default=0, help="also stop after this many steps (0 = no limit)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", required=True, help="run folder: metrics.jsonl, samples/, grid.png, result.json")
    p.add_argument("--max-images", type=int, default=0, help="use at most this many images (0 = all)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--steady-after", type=int, default=50,
                   help="images_per_s_after_warmup counts the steps after this one")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (GaussianDiffusion sampling_timesteps)")

    p = sub.add_parser("bench-train", parents=[common], help="training images/s on random data")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-ema", action="store_true", help="leave out the EMA update (it is part of the peer's step)")

    p = sub.add_parser("bench-sample", parents=[common], help="sampling seconds and images/s")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"))
    p.add_argument("--warmup-steps", type=int, default=10, help="DDIM steps of the untimed warm-up batch")

    p = sub.add_parser("max-batch", parents=[common], help="largest training batch that fits in GPU memory")
    p.add_argument("--start", type=int, default=64)
    p.add_argument("--cap", type=int, default=8192)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    pc.set_threads(args.threads)
    device = pick_device_checked(args.device)
    pc.set_precision(args.precision, device)
    handlers = {"train": cmd_train, "bench-train": cmd_bench_train,
                "bench-sample": cmd_bench_sample, "max-batch": cmd_max_batch}
    result = handlers[args.mode](args, device)
    pc.emit_result(result)


def pick_device_checked(name: str) -> torch.device:
    device = pc.pick_device(name)
    if device.type == "cpu":
        print("note: running on the CPU; DDP's numbers are meant for the GPU", file=sys.stderr)
    return device


if __name__ == "__main__":
    main()
