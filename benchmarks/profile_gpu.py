#!/usr/bin/env python3
"""Where does a difflab training step and sampling forward spend its time on a GPU?

Prints, for a network preset: the forward FLOPs, the measured bf16 matmul peak, and the time
per call of each variant (autocast vs bf16 weights, channels_last, CUDA graph replay), the
host time to *enqueue* one step (if it is close to the step time, the GPU is launch-bound),
the pieces of the training step added one at a time (fwd+bwd, +optimizer, +clip, +EMA,
+augmentation), and the top kernels of one training step from torch.profiler.

    run(kind="nvidia-h100-x1", command="PYTHONPATH=$PWD/src python3 benchmarks/profile_gpu.py --out $OUT")
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from difflab.diffusion import DiffusionLoss, DiffusionSchedule, make_beta_schedule, make_denoiser  # noqa: E402
from difflab.data import augment_batch  # noqa: E402
from difflab.network import UNet, count_flops, preset  # noqa: E402
from difflab.samplers import sample_ddim  # noqa: E402
from difflab.training.ema import EMA  # noqa: E402


def cuda_ms(fn, repeats: int = 10, warmup: int = 3) -> float:
    """Median milliseconds per call, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def enqueue_ms(fn, repeats: int = 5) -> float:
    """Host milliseconds to issue one call while the GPU is idle beforehand."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        torch.cuda.synchronize()
    return statistics.median(times)


def matmul_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = cuda_ms(lambda: a @ b, repeats=20)
    return 2 * 8192**3 / ms / 1e9


def graphed(fn):
    """Capture `fn` (fixed shapes, static inputs) in a CUDA graph; return its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def kernel_table(prof, calls: int, what: str, say, lines: list[str]) -> None:
    events = prof.key_averages()
    cuda = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sum(e.count for e in cuda)
    busy_ms = sum(e.self_device_time_total for e in cuda) / 1e3 / calls
    say(f"  {what}: {kernels / calls:.0f} kernels per call, {busy_ms:.2f} ms of kernel time per call; top kernels:")
    for e in sorted(cuda, key=lambda e: -e.self_device_time_total)[:18]:
        say(f"    {e.self_device_time_total / 1e3 / calls:7.2f} ms  x{e.count // calls:<4} {e.key[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="base-64,ddpm-peer-64")
    parser.add_argument("--sample-batch", type=int, default=250)
    parser.add_argument("--train-batches", default="64,256")
    parser.add_argument("--out", default="")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    lines = [f"{torch.cuda.get_device_name()} torch {torch.__version__} cudnn {torch.backends.cudnn.version()}"]
    peak = matmul_tflops()
    lines.append(f"bf16 matmul 8192^3: {peak:.0f} TFLOP/s")
    print(lines[-1], flush=True)
    schedule = DiffusionSchedule(make_beta_schedule("cosine", 1000), "cuda")

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    for name in args.presets.split(","):
        config = preset(name)
        size = config.image_size
        model = UNet(config).cuda()
        flops = count_flops(model, size)
        say(f"\n== {name}: {model.num_parameters() / 1e6:.2f}M params, {flops / 1e9:.2f} GFLOP fwd/img at {size}px")

        # ---- Inference forward at the sampling batch -----------------------------------------------
        batch = args.sample_batch
        x = torch.randn(batch, 3, size, size, device="cuda")
        t = torch.full((batch,), 500.0, device="cuda")
        ideal = batch * flops / (peak * 1e12) * 1e3
        say(f"forward batch {batch}: floor at measured peak {ideal:.2f} ms")
        variants = {}
        with torch.inference_mode():
            def fwd_autocast(m=model, x=x):
                with torch.autocast("cuda", torch.bfloat16):
                    return m(x, t)
            variants["autocast fp32-weights NCHW"] = fwd_autocast
            model_cl = UNet(config).cuda().to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            variants["autocast channels_last"] = lambda: fwd_autocast(model_cl, x_cl)
            model_bf = UNet(config).cuda().to(dtype=torch.bfloat16, memory_format=torch.channels_last)
            x_bf = x_cl.to(torch.bfloat16)
            variants["bf16 weights channels_last"] = lambda: model_bf(x_bf, t)
            model_bf_nchw = UNet(config).cuda().to(dtype=torch.bfloat16)
            x_bf_nchw = x.to(torch.bfloat16)
            variants["bf16 weights NCHW"] = lambda: model_bf_nchw(x_bf_nchw, t)
            for label, fn in list(variants.items()):
                ms, host = cuda_ms(fn), enqueue_ms(fn)
                say(f"  {label:<34} {ms:8.2f} ms  enqueue {host:6.2f} ms  MFU {ideal / ms:5.1%}")
        for label, fn in [("graph: bf16 weights channels_last", lambda: model_bf(x_bf, t)),
                          ("graph: autocast channels_last", lambda: fwd_autocast(model_cl, x_cl)),
                          ("graph: bf16 weights NCHW", lambda: model_bf_nchw(x_bf_nchw, t))]:
            try:
                with torch.inference_mode():
                    replay = graphed(fn)
                ms = cuda_ms(replay)
                say(f"  {label:<34} {ms:8.2f} ms  MFU {ideal / ms:5.1%}")
            except Exception as error:  # noqa: BLE001
                say(f"  {label}: capture failed: {type(error).__name__}: {str(error)[:200]}")
        from torch.profiler import ProfilerActivity, profile
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                fwd_autocast()
            torch.cuda.synchronize()
        kernel_table(prof, 3, "forward (autocast, NCHW)", say, lines)
        if args.compile:
            started = time.perf_counter()
            compiled = torch.compile(model_bf)
            with torch.inference_mode():
                compiled(x_bf, t)
                say(f"  compile (default mode) of the bf16 forward: {time.perf_counter() - started:.0f} s")
                ms, host = cuda_ms(lambda: compiled(x_bf, t)), enqueue_ms(lambda: compiled(x_bf, t))
                say(f"  {'compiled bf16 channels_last':<34} {ms:8.2f} ms  enqueue {host:6.2f} ms  MFU {ideal / ms:5.1%}")
                try:
                    replay = graphed(lambda: compiled(x_bf, t))
                    ms = cuda_ms(replay)
                    say(f"  {'graph: compiled bf16 CL':<34} {ms:8.2f} ms  MFU {ideal / ms:5.1%}")
                except Exception as error:  # noqa: BLE001
                    say(f"  graph of compiled: capture failed: {type(error).__name__}: {str(error)[:200]}")
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        compiled(x_bf, t)
                    torch.cuda.synchronize()
                kernel_table(prof, 3, "forward (compiled bf16)", say, lines)
        # Whole DDIM-50 through the sampler (autocast, as `difflab sample` runs it).
        denoiser = make_denoiser(model_cl, schedule, "pred_v", "static")
        def ddim():
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
                return sample_ddim(denoiser, x_cl, schedule, steps=50)
        ms = cuda_ms(ddim, repeats=3, warmup=1)
        say(f"  sample_ddim 50 steps batch {batch} (autocast, CL): {ms:.0f} ms = {ms / 50:.2f} ms/step; "
            f"1000 images: {ms * 1000 / batch / 1e3:.2f} s")
        del model_bf, model_bf_nchw, variants

        # ---- Training step ----------------------------------------------------------------------------
        for train_batch in map(int, args.train_batches.split(",")):
            net = UNet(config).cuda().to(memory_format=torch.channels_last)
            ema = EMA(net)
            optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
            loss_fn = DiffusionLoss(schedule, "pred_v", "min_snr")
            images = torch.rand(train_batch, 3, size, size, device="cuda").mul(2).sub(1)
            images = images.contiguous(memory_format=torch.channels_last)
            generator = torch.Generator("cuda").manual_seed(0)
            ideal = 3 * train_batch * flops / (peak * 1e12) * 1e3

            def fwd_bwd():
                with torch.autocast("cuda", torch.bfloat16):
                    loss = loss_fn(net, images, generator)
                loss.backward()

            def plus_opt():
                fwd_bwd()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            def plus_clip():
                fwd_bwd()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            def plus_ema():
                plus_clip()
                ema.update(net, 1)

            def full():
                g = torch.Generator("cuda").manual_seed(123)
                batch_images = augment_batch(images, g, True, 0.0, 0.0).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", torch.bfloat16):
                    loss = loss_fn(net, batch_images, g)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                ema.update(net, 1)

            say(f"train batch {train_batch}: floor {ideal:.2f} ms")
            for label, fn in [("fwd+bwd", fwd_bwd), ("+ fused AdamW", plus_opt), ("+ clip_grad_norm", plus_clip),
                              ("+ EMA", plus_ema), ("+ hflip aug, fresh generator", full)]:
                ms, host = cuda_ms(fn), enqueue_ms(fn)
                say(f"  {label:<34} {ms:8.2f} ms  enqueue {host:6.2f} ms  {train_batch / ms * 1e3:7.0f} img/s  "
                    f"MFU {ideal / ms:5.1%}")
            if train_batch == 64:
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        full()
                    torch.cuda.synchronize()
                kernel_table(prof, 3, "training step", say, lines)
            del net, ema, optimizer
            torch.cuda.empty_cache()
    if args.out:
        Path(args.out, f"profile-{'-'.join(args.presets.split(','))}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
