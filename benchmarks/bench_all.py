#!/usr/bin/env python3
"""The single GPU entry for issues 5 and 17: difflab against its peers, training and sampling, one table.

Why one entry: the issue's targets are ratios measured "side by side with the peers in the
same run on the same GPU". This runs each benchmark as its own process (so no allocator,
compile cache or thread pool leaks from one into the next), the peer first in each, collects
their JSON, and prints one combined table with both sides, the ratio, MFU, the GPU, torch
version and commit, followed by the issue's targets checked one by one.

Parts (`--parts`, comma-separated; default all):
    train       bench_train vs denoising-diffusion-pytorch (README Unet, 35.7M) at batch 64 and 256,
                64x64, bf16; difflab preset ddpm-peer-64 (36.7M)
                (the peer timed both ways: synced every step, as its Trainer, and pipelined, its best)
    train-default  bench_train of difflab's default network (preset base-64, 16.4M) at batch 64, no peer:
                issue 17's MFU target of 30% for the default recipe
    train-diffusers  bench_train vs diffusers UNet2DModel sized like the same difflab preset, batch 64
    sample-ddim bench_sample DDIM-50, 1,000 images at batch 250 (`--ddim-batch`), vs denoising-diffusion-pytorch
    sample-ddpm bench_sample DDPM-1000, 1,000 images at batch 250 (`--ddpm-batch`; target < 60 s); the peer makes
                `--ddpm-peer-n` (250) images, compared in images/s (its 1,000 would take ~4-5 min)
    max-batch   largest training batch that fits, 64x64 and 128x128, both sides, with MiB per image

Device commands (one device call may run 10 minutes, so the parts are split over three calls;
carry the peer wheels `.whl`, installed as benchmarks/README.md says; each call writes its
table to $OUT/bench-all.md and the rows to $OUT/bench-all.json):

    run(kind="nvidia-h200", carry=[".whl"], timeout_s=600, command=
      "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src || exit; export PYTHONUNBUFFERED=1; python3 benchmarks/bench_all.py --parts train,train-diffusers --out $OUT")
    run(... same install line ...; python3 benchmarks/bench_all.py --parts sample-ddim,max-batch --out $OUT")
    run(... same install line ...; python3 benchmarks/bench_all.py --parts sample-ddpm --out $OUT")

(`kind` may be nvidia-h100-x1 too; the issue's peer figures are from an H200. `$PWD/src` on
PYTHONPATH makes difflab importable on the bare device image without `pip install -e .`; the
bench scripts also fall back to `src/` themselves.)
Add `--compile` to measure difflab with torch.compile (slow to compile: ~100-150 s per shape).

Locally (CPU, smoke only): `python benchmarks/bench_all.py --device cpu --smoke`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

BENCH = Path(__file__).resolve().parent
PARTS = ("train", "train-default", "train-diffusers", "sample-ddim", "sample-ddpm", "max-batch")


def jobs(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """(part, name, argv) for every benchmark process of the chosen parts."""
    net = ["--device", args.device, "--preset", args.preset]
    extra = ["--compile", "on"] if args.compile else []
    if args.smoke:  # tiny sizes: checks the plumbing on a CPU in a minute, measures nothing
        net = ["--device", args.device, "--channels", "32", "--dim-mults", "1,2", "--res-blocks", "1",
               "--attn-resolutions", "8", "--image-size", "16", "--threads", str(args.threads or 2)]
    train = ["--steps", "4", "--warmup", "1"] if args.smoke else ["--steps", str(args.train_steps),
                                                                  "--warmup", str(args.train_warmup)]
    n = "4" if args.smoke else "1000"
    ddim_batch, ddpm_batch = ("4", "4") if args.smoke else (str(args.ddim_batch), str(args.ddpm_batch))
    peer_dl = "none" if args.smoke else "lucidrains"
    out: list[tuple[str, str, list[str]]] = []
    if "train" in args.parts:
        for b in ((4,) if args.smoke else (64, 256)):
            out.append(("train", f"train-b{b}", ["bench_train.py", *net, *train, *extra, "--batch", str(b),
                                                  "--peer", peer_dl, "--bench-label", f"train 64px b{b}"]))
    if "train-default" in args.parts:
        default_net = net if args.smoke else ["--device", args.device, "--preset", "base-64"]
        out.append(("train-default", "train-default-b64",
                    ["bench_train.py", *default_net, *train, *extra, "--batch", "4" if args.smoke else "64",
                     "--peer", "none", "--bench-label", "train default network b64"]))
    if "train-diffusers" in args.parts:
        out.append(("train-diffusers", "train-diffusers-b64",
                    ["bench_train.py", *net, *train, *extra, "--batch", "4" if args.smoke else "64",
                     "--peer", "diffusers", "--bench-label", "train 64px b64 vs diffusers"]))
    if "sample-ddim" in args.parts:
        out.append(("sample-ddim", "sample-ddim50",
                    ["bench_sample.py", *net, *extra, "--n", n, "--batch", ddim_batch, "--steps", "2" if args.smoke else "50",
                     "--peer", peer_dl, "--bench-label", "DDIM-50 1000 img"]))
    if "sample-ddpm" in args.parts and not args.smoke:
        out.append(("sample-ddpm", "sample-ddpm1000",
                    ["bench_sample.py", *net, *extra, "--sampler", "ddpm", "--n", n, "--batch", ddpm_batch,
                     "--peer", peer_dl, "--peer-n", str(args.ddpm_peer_n), "--bench-label", "DDPM-1000 1000 img"]))
    if "max-batch" in args.parts and not args.smoke:
        for size in (64, 128):
            out.append(("max-batch", f"max-batch-{size}",
                        ["bench_train.py", *net, *extra, "--image-size", str(size), "--max-batch",
                         "--peer", "lucidrains", "--bench-label", f"max batch {size}px"]))
    return out


def run_job(name: str, argv: list[str], out_dir: Path, peak: float | None, timeout_s: float) -> dict[str, Any]:
    json_path = out_dir / f"{name}.json"
    command = [sys.executable, str(BENCH / argv[0]), *argv[1:], "--json-out", str(json_path)]
    if peak and "--max-batch" not in argv:
        command += ["--peak-tflops", f"{peak:.3f}"]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    log = out_dir / f"{name}.log"
    try:
        with log.open("w") as handle:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=timeout_s)
            handle.write(done.stdout)
        print(done.stdout[-4000:], flush=True)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {timeout_s:.0f} s", "rows": []}
    if not json_path.is_file():
        return {"name": name, "error": f"exit {done.returncode}; see {log}", "rows": []}
    payload = json.loads(json_path.read_text())
    payload["name"], payload["seconds"] = name, time.perf_counter() - started
    return payload


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each as a PASS/BELOW line."""
    lines = []

    def find(label: str, side: str = "difflab") -> dict[str, Any] | None:
        return next((r for r in rows if r.get("bench") == label and r["side"].startswith(side)), None)

    def verdict(passed: bool) -> str:
        return "PASS" if passed else "BELOW"

    for b in (64, 256):  # issue 17: >= 5x the peer at its faster timing; MFU >= 40% at batch 256
        row = find(f"train 64px b{b}")
        if row and row.get("ratio"):
            mfu = 100 * (row.get("mfu") or 0)
            aim = f"; MFU {mfu:.1f}% (target >= 40%): {verdict(mfu >= 40)}" if b == 256 else f"; MFU {mfu:.1f}%"
            lines.append(f"training b{b}: {row['ratio']:.2f}x the peer's faster timing, {row.get('ratio_against')} "
                         f"(target >= 5x): {verdict(row['ratio'] >= 5)}{aim}")
    row = find("train default network b64")
    if row and row.get("mfu"):
        lines.append(f"training, default network, b64: MFU {100 * row['mfu']:.1f}% (target >= 30%): "
                     f"{verdict(row['mfu'] >= 0.30)}; {row['images_per_s']:,.0f} img/s")
    row = find("DDIM-50 1000 img")
    if row and row.get("seconds"):
        ratio = f"{row['ratio']:.2f}x the peer (goal 5x)" if row.get("ratio") else "no peer row"
        lines.append(f"DDIM-50, {row['n']} images: {row['seconds']:.2f} s (target <= 2.6 s): "
                     f"{verdict(row['seconds'] <= 2.6)}; {ratio}; MFU {100 * (row.get('mfu') or 0):.1f}%")
    row = find("DDPM-1000 1000 img")
    if row:
        lines.append(f"DDPM-1000, {row['n']} images: {row['seconds']:.1f} s (target <= 45 s): "
                     f"{verdict(row['seconds'] <= 45)}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--preset", default="ddpm-peer-64", help="difflab network matched to the peer")
    parser.add_argument("--compile", action="store_true", help="difflab with torch.compile")
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--train-warmup", type=int, default=10)
    parser.add_argument("--ddim-batch", type=int, default=250, help="sampling batch of the DDIM-50 part (both sides)")
    parser.add_argument("--ddpm-batch", type=int, default=250, help="sampling batch of the DDPM-1000 part (both sides)")
    parser.add_argument("--ddpm-peer-n", type=int, default=250, help="images the peer makes with DDPM-1000")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="default: measured by the first part")
    parser.add_argument("--timeout", type=float, default=560, help="seconds per benchmark process")
    parser.add_argument("--out", default=os.environ.get("OUT", ".runs/bench-all"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no lucidrains: check the plumbing")
    args = parser.parse_args(argv)
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = args.parts - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown --parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    peak = args.peak_tflops or None
    results = []
    for _, name, job_argv in jobs(args):
        result = run_job(name, job_argv, out_dir, peak, args.timeout)
        results.append(result)
        if peak is None:  # measure the matmul peak once, then hand it to every later part
            peak = next((r.get("peak_tflops") for r in result.get("rows", []) if r.get("peak_tflops")), None)

    rows = [row for result in results for row in result.get("rows", [])]
    env = next((r["environment"] for r in results if r.get("environment")), None)
    if env is None:
        raise SystemExit("no benchmark produced a result; see the logs in " + str(out_dir))
    errors = [f"{r['name']}: {r['error']}" for r in results if r.get("error")]
    errors += [f"{row['bench']} / {row['side']}: {row['error']}" for row in rows if row.get("error")]
    table = bc.markdown_table(rows, env)
    peak_note = f"MFU = model FLOPs (torch.utils.flop_counter; training 3x forward) / {peak:.1f} TFLOP/s" if peak else ""
    report = "\n".join([table, "", peak_note, "", *check_targets(rows), *(["", "errors:", *errors] if errors else [])])
    print("\n" + report)
    (out_dir / "bench-all.md").write_text(report + "\n")
    bc.write_json(str(out_dir / "bench-all.json"), {"environment": env, "peak_tflops": peak, "rows": rows,
                                                    "parts": sorted(args.parts), "argv": sys.argv[1:]})


if __name__ == "__main__":
    main()
