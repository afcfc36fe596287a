"""Issue 17, item 3: how long `--compile on` takes before the first training step, cold and with a
warm compile cache, for each `--compile-scope`, and what the steady step costs afterwards.

Each measurement runs in a fresh Python process (in-process caches would make every compile after
the first warm). Per variant (scope x CUDA-graphs setting) a fresh folder holds the
`--compile-cache` folder and the process's TMPDIR (where Inductor keeps its precompiled C++
headers), so "cold" is a first compile on this machine; "warm" is a second process with the same
folders. One eager process gives the uncompiled step for reference.

The process builds `DiffusionTrainer` from the run's defaults (`TrainConfig()`: the 64 px network,
16.4M parameters) with `--batch-size`, then times, from the start of `trainer.prepare` (the
library's `compile_or_eager`, inside `compile_cache`, under the run's autocast, as
`training/loop.py` calls it): the first training step (`first_step_s`) and the first `--warmup`
steps (`ready_s`: with CUDA graphs the second and third calls record them); then `--steps` more
steps give the steady seconds per step. "8-min steps" is warmup + (480 s - ready_s) / steady step:
the steps a run with that budget would make if nothing else took time.

    python benchmarks/compile_time.py --batch 8 --threads 2 --out DIR          # the CPU proxy
    python benchmarks/compile_time.py --out $OUT/compile-time                  # a GPU: batch 64
    python benchmarks/compile_time.py --variants whole:auto,blocks:auto,blocks:off --out ...
    python benchmarks/compile_time.py --levers channels_last,cudnn_benchmark --out ...  # + whole:auto, cold, each on

`--levers` names boolean run options (issue 17's speed levers); each adds one cold `whole:auto`
process with that option on, beside the plain `whole:auto` row, so its steady step is an A/B on
the same machine in the same call.

It prints a table and writes DIR/compile-time.json and DIR/compile-time.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

BUDGET_SECONDS = 480.0  # the issue's default run: 8 minutes
HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=64, help="batch size (the run's default: 64)")
    parser.add_argument("--variants", default="whole:auto,blocks:auto",
                        help="comma-separated SCOPE:CUDA_GRAPHS pairs (--compile-scope, --cuda-graphs)")
    parser.add_argument("--levers", default="", help="comma-separated boolean run options (channels_last, "
                        "cudnn_benchmark): one cold whole:auto process with each switched on")
    parser.add_argument("--no-eager", action="store_true", help="skip the eager reference process")
    parser.add_argument("--steps", type=int, default=20, help="timed steady steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps before the steady ones (incl. the first)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads on the CPU (0: torch's)")
    parser.add_argument("--config", default="{}", help="JSON overrides of TrainConfig (e.g. a smaller network)")
    parser.add_argument("--out", default="", help="folder for compile-time.json and compile-time.md")
    parser.add_argument("--child-timeout", type=float, default=540.0, help="seconds one measurement may take")
    parser.add_argument("--keep-caches", action="store_true", help="leave the cache folders (their paths print)")
    # one measurement (the child process)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", default="on", help=argparse.SUPPRESS)
    parser.add_argument("--scope", default="whole", help=argparse.SUPPRESS)
    parser.add_argument("--cuda-graphs", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--lever", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from difflab.config import TrainConfig
    for lever in levers(args):  # a misspelt lever fails here, before any measurement
        field = TrainConfig.__dataclass_fields__.get(lever)
        if field is None or field.type not in (bool, "bool"):
            parser.error(f"--levers: {lever!r} is not a boolean run option")
    return args


def levers(args: argparse.Namespace) -> list[str]:
    return [name for name in (args.lever or args.levers).split(",") if name]


# ---- one measurement, in its own process ----------------------------------------------------------
def measure(args: argparse.Namespace) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from difflab.training.speed import resolve_compile_scope
    if str(HERE) not in sys.path:  # loop_step, also when this module was imported from elsewhere
        sys.path.insert(0, str(HERE))
    from loop_step import build_loop_step

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    values = {**json.loads(args.config), "batch_size": args.batch, "compile": args.compile,
              "compile_scope": args.scope, "cuda_graphs": args.cuda_graphs, "compile_cache": args.cache,
              **{lever: True for lever in levers(args)}}
    load = os.getloadavg()[0]
    counters.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop = build_loop_step(values, device)  # trainer.prepare inside, as training/loop.py calls it
        started, prepared = loop.prepare_started, loop.prepare_s  # the clock runs from the start of prepare
        config, precision, compiling, cuda_graphs, step, sync = (loop.config, loop.precision, loop.compiling,
                                                                 loop.cuda_graphs, loop.step, loop.sync)
        step(0)
        sync()
        first_step = time.perf_counter() - started
        for index in range(1, args.warmup):
            step(index)
        sync()
        ready = time.perf_counter() - started
    fell_back = [str(w.message)[:200] for w in caught if "torch.compile failed" in str(w.message)]
    times = []
    for index in range(args.warmup, args.warmup + args.steps):
        begin = time.perf_counter()
        step(index)
        sync()
        times.append(time.perf_counter() - begin)
    steady = statistics.median(times)
    cache_dir = Path(args.cache) if args.cache not in ("off", "auto") else None
    cache_bytes = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file()) if cache_dir else 0
    return {
        "compile": compiling, "scope": resolve_compile_scope(config.compile_scope) if compiling else "-",
        "lever": args.lever,
        "cuda_graphs": cuda_graphs, "batch": args.batch, "precision": precision, "device": device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "load_average_1min": load,
        "prepare_s": prepared, "first_step_s": first_step, "ready_s": ready, "warmup_steps": args.warmup,
        "steady_step_s": steady, "steady_step_min_s": min(times), "fell_back_to_eager": fell_back,
        "unique_graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values()),
        "fx_graph_cache": {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")},
        "aot_autograd_cache": {k: v for k, v in counters["aot_autograd"].items() if k.startswith("autograd_cache")},
        "cache_mib": cache_bytes / 2**20,
        "parameters": sum(p.numel() for p in loop.trainer.model.parameters()),
    }


def device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown CPU"


# ---- the driver ------------------------------------------------------------------------------------
def run_child(args: argparse.Namespace, env: dict, **child) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", "--device", args.device, "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--config", args.config, *[f"--{k.replace('_', '-')}={v}" for k, v in child.items()]]
    try:
        process = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.child_timeout)
    except subprocess.TimeoutExpired as expired:
        return {"error": f"timed out after {args.child_timeout} s", "child": child,
                "output_tail": str(expired.stderr or "")[-3000:]}
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:  # a row that says so; the other variants still run
        return {"error": f"exit {process.returncode}", "child": child,
                "output_tail": (process.stdout[-2000:] + process.stderr[-4000:])}
    return json.loads(lines[-1][len("RESULT "):])


def fresh_folders(base_env: dict, name: str) -> tuple[Path, dict]:
    """A new root folder for one variant's cache (root/inductor) and the environment of its
    processes: TMPDIR (Inductor's precompiled headers) and XDG_CACHE_HOME inside it."""
    root = Path(tempfile.mkdtemp(prefix=f"difflab-compile-{name}-"))
    (root / "tmp").mkdir()
    return root, {**base_env, "TMPDIR": str(root / "tmp"), "XDG_CACHE_HOME": str(root / "xdg")}


def rows_for(args: argparse.Namespace, report) -> list[dict]:
    """Every measurement, `report(rows)` after each (so a run cut short keeps what it measured)."""
    rows = []

    def add(row: dict) -> None:
        rows.append(row)
        print_row(row)
        report(rows)

    base_env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    if not args.no_eager:
        add({"cache": "-", **run_child(args, base_env, compile="off")})
    for variant in filter(None, args.variants.split(",")):
        scope, graphs = variant.split(":")
        root, env = fresh_folders(base_env, f"{scope}-{graphs}")
        for state in ("cold", "warm"):
            add({"cache": state, "variant": variant,
                 **run_child(args, env, scope=scope, cuda_graphs=graphs, cache=str(root / "inductor"))})
            if "error" in rows[-1]:
                break  # no warm run after a failed cold one
        if args.keep_caches:
            print(f"caches of {variant}: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    for lever in levers(args):  # cold only: its steady step is the A/B, its compile time a by-product
        root, env = fresh_folders(base_env, lever)
        add({"cache": "cold", "variant": f"whole:auto+{lever}",
             **run_child(args, env, scope="whole", cuda_graphs="auto", cache=str(root / "inductor"), lever=lever)})
        shutil.rmtree(root, ignore_errors=True)
    return rows


def eight_minute_steps(row: dict) -> int:
    return int(row["warmup_steps"] + max(0.0, BUDGET_SECONDS - row["ready_s"]) / row["steady_step_s"])


HEADER = ("| scope | CUDA graphs | cache | first step (s) | ready (s) | vs whole/cold | steady step (ms) "
          "| vs whole | graphs | FX cache hit/miss | 8-min steps |")


def table(rows: list[dict]) -> str:
    reference = next((r for r in rows if r.get("scope") == "whole" and r["cache"] == "cold" and not r.get("lever")),
                     None)
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for row in rows:
        if "error" in row:
            lever = f" +{row['child']['lever']}" if row["child"].get("lever") else ""
            lines.append(f"| {row['child'].get('scope', 'eager')}{lever} | {row['child'].get('cuda_graphs', '-')} "
                         f"| {row['cache']} | failed: {row['error']} |")
            continue
        fx = row["fx_graph_cache"]
        first_ratio = f"{row['first_step_s'] / reference['first_step_s']:.2f}x" if reference and row["compile"] else "-"
        step_ratio = f"{row['steady_step_s'] / reference['steady_step_s']:.2f}x" if reference else "-"
        lever = f" +{row['lever']}" if row.get("lever") else ""
        lines.append(f"| {row['scope'] if row['compile'] else 'eager'}{lever} | {'on' if row['cuda_graphs'] else 'off'} "
                     f"| {row['cache']} | {row['first_step_s']:.1f} | {row['ready_s']:.1f} | {first_ratio} "
                     f"| {1000 * row['steady_step_s']:.1f} | {step_ratio} | {row['unique_graphs']} "
                     f"| {fx.get('fxgraph_cache_hit', 0)}/{fx.get('fxgraph_cache_miss', 0)} "
                     f"| {eight_minute_steps(row):,} |")
    return "\n".join(lines)


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"  {row['child']} cache={row['cache']}: FAILED ({row['error']})\n{row['output_tail']}", flush=True)
        return
    note = f" FELL BACK TO EAGER: {row['fell_back_to_eager'][0]}" if row["fell_back_to_eager"] else ""
    print(f"  {row['scope'] + (' +' + row['lever'] if row.get('lever') else ''):<6} graphs={'on' if row['cuda_graphs'] else 'off':<3} cache={row['cache']:<4} "
          f"first step {row['first_step_s']:7.1f} s  steady {1000 * row['steady_step_s']:8.1f} ms  "
          f"graphs {row['unique_graphs']}  load {row['load_average_1min']:.1f}{note}", flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(measure(args), sort_keys=True), flush=True)
        return {}
    started = time.time()
    command = "python benchmarks/compile_time.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict = {}

    def write(rows: list[dict]) -> None:
        first = next((row for row in rows if "error" not in row), None)
        about = (f"{first['device']}, torch {first['torch']}, batch {args.batch}, {first['precision']}, "
                 f"{first['threads']} threads" if first else "every measurement failed")
        report.update(command=command, device=first and first["device"], torch=first and first["torch"],
                      batch=args.batch, wall_s=time.time() - started, rows=rows, text=f"{about}\n\n{table(rows)}\n")
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "compile-time.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
            (out / "compile-time.md").write_text(f"`{command}`\n\n{report['text']}")

    rows_for(args, write)
    print("\n" + report["text"])
    return report


if __name__ == "__main__":
    main()
