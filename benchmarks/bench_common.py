"""What `bench_train.py`, `bench_sample.py` and `bench_all.py` share.

Why a separate module: both benchmarks must measure difflab and its peer *the same way*
(same clock, same synchronisation, same thread count, same precision words, same table),
and the table must always say which device, torch version and commit produced it.
The peers themselves run as subprocesses of `benchmarks/peers/*.py` (each prints a final
`RESULT {json}` line); their timing helpers (`peer_common`) are reused here so that
"median of synchronised steps after a warm-up" means the identical code on both sides.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
sys.path.insert(0, str(PEERS_DIR))
import peer_common as pc  # noqa: E402  (shared clock, step statistics, max-batch search, RESULT line)

try:  # a bare checkout (e.g. the GPU machine) without `pip install -e .`
    import difflab  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "src"))

PEER_SCRIPTS = {"diffusers": PEERS_DIR / "diffusers_peer.py", "lucidrains": PEERS_DIR / "lucidrains_ddpm.py"}
PRECISIONS = ("auto", "bf16", "fp32", "tf32")


# --------------------------------------------------------------------------------------------
# Environment: device, threads, precision, provenance
# --------------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    return pc.pick_device(name)


def set_threads(threads: int) -> int:
    """Pin torch's intra-op threads (and pass the same number to the peer): on a CPU the
    thread count decides the result more than any library difference, so it is a flag and
    it is printed, never left to whatever torch guessed."""
    pc.set_threads(threads)
    return torch.get_num_threads()


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto` is difflab's own default (`resolve_mixed_precision`: bf16 autocast on GPUs with
    bf16 and on AMX CPUs, else fp32); the other words are the peers' (bf16|fp32|tf32)."""
    if requested != "auto":
        return requested
    from difflab.training.speed import resolve_mixed_precision

    return "bf16" if resolve_mixed_precision("auto", device) == "bf16" else "fp32"


def apply_precision(precision: str, device: torch.device) -> None:
    """Fix TF32 on/off explicitly (as the peers do), so no run inherits a global default."""
    pc.set_precision(precision, device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for 'bf16' (what the trainer's accelerator.autocast() does), else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def difflab_precision_word(precision: str) -> str:
    """bench precision -> the word difflab's generation API takes ('bf16' or 'no')."""
    return "bf16" if precision == "bf16" else "no"


def git_commit() -> str:
    """Short HEAD, with '+dirty' when tracked files differ from it (read-only git calls)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with contextlib.suppress(Exception):
        name += ", AMX" if amx() else ""
    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def load_average() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None


def environment(device: torch.device) -> dict[str, Any]:
    return {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
            "commit": git_commit(), "threads": torch.get_num_threads(), "load_average_1min": load_average(),
            "python": platform.python_version(), "peer_env": dict(PEER_ENV)}


def wait_for_quiet_cpu(max_load: float, timeout_s: float, log: bool = True) -> float | None:
    """Wait (up to `timeout_s`) until the 1-minute load average is below `max_load`: CPU timings
    taken while other work runs on a 2-core machine are worthless. Returns the load seen."""
    deadline = time.monotonic() + timeout_s
    load = load_average()
    while load is not None and load > max_load and time.monotonic() < deadline:
        if log:
            print(f"waiting for the CPU to be quiet: load {load} > {max_load}", file=sys.stderr, flush=True)
        time.sleep(15)
        load = load_average()
    return load


def sync(device: torch.device) -> None:
    pc.sync(device)


# glibc malloc settings for `--cpu-allocator heap`: serve large blocks from the heap instead of a fresh
# mmap per allocation, and keep freed heap memory. With the default (dynamic threshold, at most 32 MiB)
# every large activation of a CPU forward/backward is a new mapping, page-faulted in on first write:
# measured here, 2.7M minor faults per 60 DDIM forwards and a SiLU over a 25 MB tensor taking 6.8 ms.
HEAP_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}


def apply_cpu_allocator(setting: str) -> dict[str, str]:
    """Apply `setting` ('default' or 'heap') to this process (glibc mallopt, effective for later
    allocations) and return the environment that gives a child process (the peer) the same."""
    if setting == "default":
        return {}
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    ok = libc.mallopt(-3, 1 << 30) == 1 and libc.mallopt(-1, 1 << 31) == 1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    if not ok:
        print("note: mallopt refused the heap allocator settings", file=sys.stderr)
    return dict(HEAP_ALLOCATOR_ENV)


# --------------------------------------------------------------------------------------------
# Matrix-product peak (the MFU denominator)
# --------------------------------------------------------------------------------------------
def measure_matmul_tflops(device: torch.device, precision: str, seconds: float = 1.0) -> float:
    """The measured dense matrix-product rate in TFLOP/s at `precision` (bf16, tf32 or fp32),
    the denominator of MFU as the issue defines it ("divide by the measured bf16
    matrix-product rate of that GPU"). Square matmuls large enough to saturate the device
    (8192 on a GPU, 2048 on a CPU), best of several timed batches."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        for _ in range(3):
            a @ b
        sync(device)
        best, spent = float("inf"), 0.0
        reps = 10 if device.type == "cuda" else 2
        while spent < seconds:
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            sync(device)
            elapsed = time.perf_counter() - start
            best, spent = min(best, elapsed / reps), spent + elapsed
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return 2 * n**3 / best / 1e12


def peak_tflops(args: argparse.Namespace, device: torch.device, precision: str) -> tuple[float | None, str]:
    """`--peak-tflops` if given, else a quick measurement (skipped with --no-measure-peak)."""
    if args.peak_tflops:
        return args.peak_tflops, "given"
    if getattr(args, "no_measure_peak", False):
        return None, "not measured"
    return measure_matmul_tflops(device, precision), f"measured {precision} matmul"


def mfu(flops_per_second: float | None, peak: float | None) -> float | None:
    if not flops_per_second or not peak:
        return None
    return flops_per_second / (peak * 1e12)


# --------------------------------------------------------------------------------------------
# The difflab network a benchmark uses
# --------------------------------------------------------------------------------------------
def add_network_options(parser: argparse.ArgumentParser, default_preset: str | None) -> None:
    """difflab's own sizing words; the diffusers peer takes the same ones, so passing them
    through builds a UNet2DModel of matching width, depth and attention placement."""
    group = parser.add_argument_group("network (a difflab preset, then explicit flags on top)")
    group.add_argument("--preset", default=default_preset,
                       help="difflab UNet preset (difflab.network.PRESETS), e.g. ddpm-peer-64, base-64, mnist-28")
    group.add_argument("--image-size", type=int, default=0, help="0 = the preset's size")
    group.add_argument("--image-channels", type=int, default=3, help="the peers are RGB: 3")
    group.add_argument("--channels", type=int, help="base width (difflab --channels)")
    group.add_argument("--dim-mults", help="width multipliers, e.g. 1,2,2")
    group.add_argument("--res-blocks", type=int, help="residual blocks per encoder level")
    group.add_argument("--attn-resolutions", help="feature-map sizes with self-attention, e.g. 8 ('' = none)")
    group.add_argument("--dropout", type=float, help="dropout in the residual blocks")


def unet_config_from_args(args: argparse.Namespace):
    """A validated UNetConfig: preset (or difflab's TrainConfig defaults), then explicit flags."""
    from difflab.build import unet_config
    from difflab.config import TrainConfig
    from difflab.network import preset as unet_preset
    from difflab.network.config import parse_int_tuple

    if args.preset:
        overrides: dict[str, Any] = {}
        if args.image_size:
            overrides["image_size"] = args.image_size
        config = unet_preset(args.preset, **overrides)
    else:
        config = unet_config(TrainConfig(image_size=args.image_size or 64), 3)
    changes: dict[str, Any] = {"image_channels": args.image_channels}
    if args.channels is not None:
        changes["base_channels"] = args.channels
    if args.dim_mults is not None:
        changes["dim_mults"] = parse_int_tuple(args.dim_mults, "--dim-mults")
    if args.res_blocks is not None:
        changes["num_res_blocks"] = args.res_blocks
    if args.attn_resolutions is not None:
        changes["attn_resolutions"] = parse_int_tuple(args.attn_resolutions, "--attn-resolutions")
    if args.dropout is not None:
        changes["dropout"] = args.dropout
    config = replace(config, **changes)
    config.validate()
    return config


def train_config_for(unet, **overrides: Any):
    """difflab's TrainConfig (all other options at their defaults: cosine, pred_v, min-SNR,
    AdamW, EMA 0.999) with the network fields of `unet`: what `difflab train` would build."""
    from difflab.config import TrainConfig

    return TrainConfig(
        image_size=unet.image_size, channels=unet.base_channels,
        dim_mults=",".join(map(str, unet.dim_mults)), res_blocks=unet.num_res_blocks,
        attn_resolutions=",".join(map(str, unet.attn_resolutions)), dropout=unet.dropout,
        data="random", out="unused", **overrides,
    )


def describe_unet(unet) -> str:
    attn = ",".join(map(str, unet.attn_resolutions)) or "none"
    return (f"channels {unet.base_channels}, dim-mults {','.join(map(str, unet.dim_mults))}, "
            f"res-blocks {unet.num_res_blocks}, attention at {attn} (+ middle), {unet.image_size} px, "
            f"{unet.image_channels} ch")


def randomize_zero_init(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """difflab zero-initialises the last layer of every residual branch and the head, so a fresh
    network outputs exactly 0; equivalence tests (and a fair sampling run) need a network that
    computes something. Fills every all-zero parameter with small Gaussian values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and not parameter.detach().abs().sum():
                noise = torch.randn(parameter.shape, generator=generator) * std
                parameter.copy_(noise.to(parameter.device, parameter.dtype))
    return model


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------
def peer_sizing_flags(peer: str, unet) -> list[str]:
    """Flags that make the peer's network match `unet`. diffusers takes difflab's own words;
    denoising-diffusion-pytorch is always the README's Unet(64, (1, 2, 4, 8)) and only the
    image size can follow (match it from the difflab side with --preset ddpm-peer-64)."""
    if peer == "diffusers":
        return ["--image-size", str(unet.image_size), "--channels", str(unet.base_channels),
                "--dim-mults", ",".join(map(str, unet.dim_mults)), "--res-blocks", str(unet.num_res_blocks),
                "--attn-resolutions", ",".join(map(str, unet.attn_resolutions))]
    if peer == "lucidrains":
        return ["--image-size", str(unet.image_size)]
    raise ValueError(peer)


PEER_ENV: dict[str, str] = {}
"""Extra environment for every peer process (set by `apply_cpu_allocator`'s caller, so both sides
run with the same allocator settings)."""


def run_peer(peer: str, mode: str, flags: Sequence[str], timeout_s: float = 3600) -> dict[str, Any]:
    """Run one peer script in its own process (so its imports, allocator and thread pool
    cannot touch difflab's) and return its RESULT payload, or {'error': ...}."""
    command = [sys.executable, str(PEER_SCRIPTS[peer]), mode, *flags]
    prefix = " ".join(f"{k}={v}" for k, v in PEER_ENV.items())
    print(f"$ {prefix + ' ' if prefix else ''}{shlex.join(command[1:])}", file=sys.stderr, flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", DIFFUSERS_VERBOSITY="error", TQDM_DISABLE="1", **PEER_ENV)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "command": shlex.join(command[1:])}
    try:
        result = pc.parse_result_line(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout)[-3000:]
        print(tail, file=sys.stderr)
        return {"error": f"exit {done.returncode}, no RESULT line: {tail.strip().splitlines()[-1:]}",
                "command": shlex.join(command[1:])}
    result["command"] = shlex.join(command[1:])
    result["wall_s"] = time.perf_counter() - started
    return result


def peer_forward_flops(peer: str, sizing: Sequence[str], image_size: int,
                       device: torch.device | str = "cpu") -> int | None:
    """Forward FLOPs per image of the peer's network, counted with the same
    torch.utils.flop_counter as difflab's (`count_flops`), on the same device as difflab's count
    (the counter knows the CUDA attention kernels but not the CPU flash-attention kernel, so
    on a CPU attention is left out on both sides; it is <1% of the small CPU networks here).
    None when the peer library cannot be imported here (e.g. DDP without torchvision)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    try:
        x = torch.zeros(1, 3, image_size, image_size, device=device)
        t = torch.zeros(1, dtype=torch.long, device=device)
        if peer == "diffusers":
            import diffusers_peer

            args = diffusers_peer.build_parser().parse_args(["bench-train", *sizing])
            model = diffusers_peer.build_unet(diffusers_peer.resolve_network(args), args).to(device)
            forward = lambda: model(x, t).sample  # noqa: E731
        else:
            import lucidrains_ddpm

            model = lucidrains_ddpm.build_diffusion(image_size, None, device).model
            forward = lambda: model(x, t)  # noqa: E731
        # bf16 autocast on a GPU: DDP's flash_attn=True allows only FlashAttention there (no fp32 kernel)
        with torch.no_grad(), autocast(device, "bf16" if device.type == "cuda" else "fp32"), \
                FlopCounterMode(display=False) as counter:
            forward()
        flops = int(counter.get_total_flops())
        del model
        pc.free_memory(device)
        return flops
    except Exception as error:  # noqa: BLE001 - any import/build failure only loses the MFU column
        print(f"note: could not count the {peer} network's FLOPs here ({type(error).__name__}: {error})",
              file=sys.stderr)
        return None


# --------------------------------------------------------------------------------------------
# Results: rows, the table, JSON
# --------------------------------------------------------------------------------------------
TABLE_COLUMNS = ("bench", "side", "params", "batch", "precision", "img/s", "difflab/peer", "peak reserved MiB/img",
                 "MFU of TFLOP/s")
"""MFU is model FLOPs/s over the measured matrix-product rate *at the row's precision* (bf16 rows:
bf16 matmul; fp32 rows: fp32 matmul), so both are printed: on an AMX CPU the bf16 rate is ~6x
the fp32 one, and an fp32 row's higher MFU does not mean it is faster."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_row(row: dict[str, Any]) -> list[str]:
    ratio = row.get("ratio")
    mfu_value = row.get("mfu")
    return [row.get("bench", ""), row["side"], f"{row['parameters'] / 1e6:.2f}M" if row.get("parameters") else "-",
            _fmt(row.get("batch")), row.get("precision", "-"), _fmt(row.get("images_per_s")),
            f"{ratio:.2f}x" if ratio else "-", _fmt(row.get("peak_reserved_mib_per_image", row.get("peak_memory_mib_per_image"))),
            f"{100 * mfu_value:.1f}% of {row['peak_tflops']:.3g}" if mfu_value and row.get("peak_tflops")
            else "-"]


def markdown_table(rows: Iterable[dict[str, Any]], env: dict[str, Any]) -> str:
    """One Markdown table with both sides, the ratio, and the provenance line above it."""
    allocator = "; glibc heap allocator (both sides)" if env.get("peer_env") else ""
    lines = [f"device: {env['device_name']}; torch {env['torch']}; commit {env['commit']}; "
             f"threads {env['threads']}; load average {env.get('load_average_1min')}{allocator}",
             "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(table_row(row)) + " |" for row in rows]
    return "\n".join(lines)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """difflab's images/s over the peer's, per bench; a peer measured two ways (a training bench:
    as its Trainer runs and at its best) is compared at the faster of its rows."""
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_bench.setdefault(row.get("bench", ""), []).append(row)
    for bench_rows in by_bench.values():
        ours = next((r for r in bench_rows if r["side"] == "difflab"), None)
        peers = [r for r in bench_rows if r["side"] != "difflab" and r.get("images_per_s")]
        if ours and peers and ours.get("images_per_s"):
            fastest = max(peers, key=lambda r: r["images_per_s"])
            ours["ratio"] = ours["images_per_s"] / fastest["images_per_s"]
            ours["ratio_against"] = fastest["side"]
            for peer in peers:
                peer["ratio"] = None


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cuda or cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for both sides (0 = torch's default); choose it deliberately")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="difflab side: auto = difflab's default (bf16 autocast on GPUs and AMX CPUs)")
    parser.add_argument("--peer-precision", default="same", choices=("same",) + PRECISIONS[1:],
                        help="peer side (default: the same as difflab's resolved precision)")
    parser.add_argument("--peer", default="auto", choices=("auto", "diffusers", "lucidrains", "none"),
                        help="auto: lucidrains on a GPU, diffusers on a CPU (the one that runs there)")
    parser.add_argument("--peer-extra", default="", help="extra flags for the peer script, e.g. '--ema foreach'")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="matrix-product peak for MFU (default: measure a matmul at the run's precision)")
    parser.add_argument("--no-measure-peak", action="store_true", help="skip the matmul peak (no MFU column)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternate peer and difflab this many times; report the median of each side's "
                             "medians (use 3 on a shared CPU)")
    parser.add_argument("--cpu-allocator", default="default", choices=("default", "heap"),
                        help="heap: glibc keeps large blocks on the heap (no mmap + page faults per activation), "
                             "for BOTH sides (the peer through MALLOC_*_ environment variables)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", default="", help="also write rows and environment here")
    parser.add_argument("--bench-label", default="", help="name of this bench in the table (default: derived)")


def resolve_peer(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    return "lucidrains" if device.type == "cuda" else "diffusers"


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --------------------------------------------------------------------------------------------
# In-process A/B of difflab's fast paths
# --------------------------------------------------------------------------------------------
AB_TOKENS = {"eager": "", "compiled": "compile", "graphs": "graphs", "cl": "channels_last", "autocast": "autocast"}


def parse_ab(text: str) -> list[tuple[str, dict[str, bool]]]:
    """'eager,compiled-graphs,eager-cl' -> [(name, {"compile", "graphs", "channels_last", "autocast"}), ...].
    Tokens: eager | compiled, then any of -graphs (CUDA graphs), -cl (channels_last),
    -autocast (sampling: autocast over fp32 weights instead of a bf16 copy)."""
    out = []
    for name in (v.strip() for v in text.split(",") if v.strip()):
        tokens = name.split("-")
        if tokens[0] not in ("eager", "compiled") or any(token not in AB_TOKENS for token in tokens):
            raise SystemExit(f"--ab: cannot read variant {name!r}: eager|compiled, then -graphs, -cl, -autocast")
        flags = {flag: False for flag in ("compile", "graphs", "channels_last", "autocast")}
        flags.update({AB_TOKENS[token]: True for token in tokens if AB_TOKENS[token]})
        out.append((name, flags))
    return out


def run_ab(variants: dict[str, Any], rounds: int, calls: int, device: torch.device) -> list[dict[str, Any]]:
    """Time each variant's callable `calls` times per round, the variants interleaved round by round,
    all in this process: a fast path's gain then does not depend on which minute of a shared
    machine's day it was measured in (across invocations this machine drifts by up to ~15%).
    Returns per variant the median over rounds of the per-round median seconds."""
    import statistics

    for fn in variants.values():  # warm-up: allocator, oneDNN primitive cache, compiled graphs
        fn()
        fn()
    sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            seconds[name].append(statistics.median(pc.time_steps(fn, calls, 0, device)))
    first = next(iter(variants))
    base = median(seconds[first])
    return [{"variant": name, "seconds": median(values), "rounds": values, "speedup_vs_first": base / median(values),
             "first": first} for name, values in seconds.items()]


def channels_last_for(setting: str, device: torch.device) -> bool:
    """--channels-last auto|on|off -> bool: `auto` follows the trainer (its --channels-last
    default, and never on a CPU)."""
    from difflab.config import TrainConfig

    return setting == "on" or (setting == "auto" and device.type == "cuda" and TrainConfig().channels_last)


def finish(kind: str, argv: list[str], device: torch.device, env_before: dict[str, Any], rows: list[dict[str, Any]],
           json_out: str, render=None, **extra: Any) -> dict[str, Any]:
    """Print the table (`render(rows, env)`, default `markdown_table`) with the environment and the
    load average before -> after, write the JSON payload, return it."""
    env = environment(device)
    env["load_average_1min"] = f"{env_before['load_average_1min']} -> {env['load_average_1min']}"
    print((render or markdown_table)(rows, env))
    payload = {"kind": kind, "argv": argv, "environment": env, "rows": rows, **extra}
    write_json(json_out, payload)
    return payload


def ab_table(rows: list[dict[str, Any]], env: dict[str, Any], what: str, images: int) -> str:
    lines = [f"device: {env['device_name']}; torch {env['torch']}; commit {env['commit']}; threads {env['threads']}; "
             f"load average {env.get('load_average_1min')}", "", f"{what}", "",
             "| variant | median s | img/s | vs " + rows[0]["first"] + " | rel. error vs fp32 | rounds (s) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        error = f"{row['rel_error_vs_fp32']:.1e}" if row.get("rel_error_vs_fp32") is not None else ""
        lines.append(f"| {row['variant']} | {row['seconds']:.4f} | {images / row['seconds']:.1f} | "
                     f"{row['speedup_vs_first']:.2f}x | {error} | {', '.join(f'{t:.4f}' for t in row['rounds'])} |")
    return "\n".join(lines)
