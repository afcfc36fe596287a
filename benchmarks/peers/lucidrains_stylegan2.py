#!/usr/bin/env python3
"""Peer benchmark: lucidrains' stylegan2-pytorch (1.9.0), trained with its CLI's defaults.

Why this script exists: difflab's StyleGAN2 family (after NVlabs stylegan2-ada-pytorch) is
measured next to the StyleGAN2 that most PyTorch users install, in the same session on the same
GPU. The run follows `stylegan2_pytorch train --data DIR --image-size 64` (cli.py's
train_from_folder defaults, read from the 1.9.0 wheel):

    batch_size 5, gradient_accumulate_every 6 (30 images per step), learning_rate 2e-4,
    ttur_mult 1.5, lr_mlp 0.1, network_capacity 16, fmap_max 512, mixed_prob 0.9,
    no fp16, path-length regularisation on (after step 5000), no augmentation, seed 42

driving its own `Trainer` object the way cli.py's run_training does (set_data_src, then
`train()` once per step), for `--minutes` of training. Two changes, both outside what is timed
as training work: `evaluate` and `save` are disabled during the timed loop (the CLI writes a
sample grid every 100 steps for the first 2500 and checkpoints every 1000 steps; neither is part
of the optimisation step). Throughput = images seen (steps x 30) / training seconds, also
reported without the first `--warmup-steps` steps (CUDA and cuDNN start-up).

Afterwards 1,000 samples are written as PNG folders with the peer's own sampler
(`Trainer.generate_truncated`, which truncates towards the mean of 2,000 mapped latents):
psi 1 (no truncation) and psi 0.75 (its CLI's default trunc_psi), from its EMA generator GE
(what its --generate uses; `--weights ema,model` adds the raw generator G). Note: stylegan2-pytorch only starts its
EMA after 20,000 steps and before 25,000 copies G into GE at every step = 2 (mod 1000), so in a
short run GE is G as it was at the last such step.

Offline install: the device machine has torch, torchvision, einops, tqdm, numpy and pillow; the
rest come as wheels in --wheels (default .whl, made with `pip download`, see benchmarks/README.md):
stylegan2_pytorch 1.9.0, kornia 0.9.0 + kornia_rs 0.2.0, fire 0.7.1 + termcolor. This script
unpacks them into a temporary folder put first on sys.path (no pip needed there). Two of the
peer's requirements are replaced by stub modules, only for the peer, because their wheels are
absent or heavy and the default configuration never calls them:
  - `aim` (experiment tracker, ~100 MB with its UI): imported at top level, used only with log=True;
  - `vector_quantize_pytorch==0.1.0` (only an sdist exists): imported at top level, used only when
    fq_layers is non-empty (default []).
`contrastive_learner` is imported lazily (cl_reg=True only) and `retry` only by cli.py, which is not
imported. The peer asserts torch.cuda.is_available() on import: it runs on a GPU only.

Ends with one `RESULT {json}` line on stdout.
Example (on the GPU machine, from the repository root):
    python3 benchmarks/peers/lucidrains_stylegan2.py --data ../shared/data/anime-faces-64px-20k.zip \
        --minutes 5 --out $OUT/lucidrains_stylegan2
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

PEER = "stylegan2_pytorch"
PEER_VERSION = "1.9.0"
CLI_DEFAULTS: dict[str, Any] = {  # stylegan2_pytorch/cli.py train_from_folder, 1.9.0
    "batch_size": 5, "gradient_accumulate_every": 6, "network_capacity": 16, "fmap_max": 512,
    "lr": 2e-4, "lr_mlp": 0.1, "ttur_mult": 1.5, "mixed_prob": 0.9, "trunc_psi": 0.75,
    "fp16": False, "no_pl_reg": False, "aug_prob": 0.0, "aug_types": ["translation", "cutout"],
    "dataset_aug_prob": 0.0, "save_every": 1000, "evaluate_every": 1000, "seed": 42,
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The distributions this peer needs from --wheels (a folder that may hold other peers' wheels too).
PEER_WHEELS = ("stylegan2_pytorch", "kornia", "kornia_rs", "fire", "termcolor")

STUB_AIM = '''"""Stub of `aim` for the stylegan2_pytorch peer benchmark: imported at the peer's top level but
used only with Trainer(log=True), which the benchmark never sets."""
class Session:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("aim is stubbed out in benchmarks/peers/lucidrains_stylegan2.py (log=True unsupported)")
'''
STUB_VQ = '''"""Stub of `vector_quantize_pytorch` for the stylegan2_pytorch peer benchmark: its pinned 0.1.0
has no wheel; the peer uses it only when fq_layers is non-empty (default [])."""
class VectorQuantize:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("vector_quantize_pytorch is stubbed out (fq_layers unsupported in this benchmark)")
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of images or a .zip of them")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time budget (wall clock)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", required=True, help="folder for sample PNG folders and result.json")
    parser.add_argument("--wheels", default=".whl", help="folder of the peer's wheels ('' = already installed)")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--psi", default="1,0.75", help="truncation values to sample at (1 = none)")
    parser.add_argument("--weights", default="ema", help="ema (GE, what its --generate uses) and/or model (G), e.g. ema,model")
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the warm throughput")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps too (0 = no limit)")
    parser.add_argument("--dry-run", action="store_true", help="prepare data and wheels, skip the peer")
    args = parser.parse_args(argv)
    if args.minutes <= 0 and args.max_steps <= 0:
        parser.error("--minutes or --max-steps must be positive")
    if args.image_size < 4 or args.image_size & (args.image_size - 1):
        parser.error(f"--image-size must be a power of two (the peer asserts it); got {args.image_size}")
    args.psi_values = [float(v) for v in args.psi.split(",") if v.strip()]
    args.weight_sets = [w.strip() for w in args.weights.split(",") if w.strip()]
    bad = set(args.weight_sets) - {"ema", "model"}
    if bad:
        parser.error(f"--weights takes ema and/or model; got {', '.join(sorted(bad))}")
    return args


# ---- preparation (no peer imports) ---------------------------------------------------------------

def image_folder(data: str, scratch: Path) -> Path:
    """The peer's Dataset globs a folder for jpg/jpeg/png: extract a zip's images into one."""
    path = Path(data).expanduser()
    if path.is_dir():
        return path
    if not zipfile.is_zipfile(path):
        raise SystemExit(f"--data {data!r} is neither a folder nor a .zip archive")
    target = scratch / "images"
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or not name.lower().endswith(IMAGE_EXTENSIONS) or "__MACOSX" in name:
                continue
            (target / f"{count:06d}{Path(name).suffix.lower()}").write_bytes(archive.read(info))
            count += 1
    if count == 0:
        raise SystemExit(f"--data {data!r} holds no .jpg/.jpeg/.png images")
    return target


def unpack_wheels(wheels: str, scratch: Path) -> Path | None:
    """Unzip every wheel of `wheels` into one site folder (wheels are zip archives laid out as
    site-packages) and add the stubs; returns the folder, to be put first on sys.path."""
    site = scratch / "site"
    site.mkdir(parents=True, exist_ok=True)
    if wheels:
        files = sorted(w for w in Path(wheels).glob("*.whl") if w.name.split("-")[0].lower() in PEER_WHEELS)
        found = {w.name.split("-")[0].lower() for w in files}
        if found and found != set(PEER_WHEELS):
            print(f"warning: --wheels {wheels!r} lacks {', '.join(sorted(set(PEER_WHEELS) - found))}; "
                  "expecting them to be installed", file=sys.stderr)
        if not files:
            raise SystemExit(f"--wheels {wheels!r} holds no .whl files; run the pip download lines in "
                             "benchmarks/README.md, or pass --wheels '' where the peer is installed")
        for wheel in files:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
    (site / "aim.py").write_text(STUB_AIM)
    (site / "vector_quantize_pytorch.py").write_text(STUB_VQ)
    return site


def import_peer(site: Path | None):
    if site is not None:
        sys.path.insert(0, str(site))
    try:
        import stylegan2_pytorch  # noqa: F401
        from stylegan2_pytorch import Trainer
        from stylegan2_pytorch.stylegan2_pytorch import image_noise, noise_list
    except (ImportError, AssertionError) as error:
        hint = ("the peer needs a CUDA GPU (it asserts torch.cuda.is_available() on import)"
                if isinstance(error, AssertionError) else
                "a dependency is missing: torchvision, einops, kornia (+kornia_rs), fire (+termcolor) must import")
        raise SystemExit(f"cannot import {PEER} {PEER_VERSION}: {type(error).__name__}: {error} ({hint})")
    return Trainer, image_noise, noise_list


# ---- the run --------------------------------------------------------------------------------------

def build_trainer(Trainer, args: argparse.Namespace, scratch: Path):
    d = CLI_DEFAULTS
    trainer = Trainer(name="bench", results_dir="results", models_dir="models", base_dir=str(scratch),
                      image_size=args.image_size, network_capacity=d["network_capacity"], fmap_max=d["fmap_max"],
                      batch_size=d["batch_size"], gradient_accumulate_every=d["gradient_accumulate_every"],
                      lr=d["lr"], lr_mlp=d["lr_mlp"], ttur_mult=d["ttur_mult"], mixed_prob=d["mixed_prob"],
                      trunc_psi=d["trunc_psi"], fp16=d["fp16"], no_pl_reg=d["no_pl_reg"], aug_prob=d["aug_prob"],
                      aug_types=d["aug_types"], dataset_aug_prob=d["dataset_aug_prob"],
                      save_every=d["save_every"], evaluate_every=d["evaluate_every"])
    return trainer


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train_for(trainer, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    trainer.evaluate = lambda *a, **k: None  # sample grids and checkpoints are not training work
    trainer.save = lambda *a, **k: None
    budget_s = args.minutes * 60 if args.minutes > 0 else float("inf")
    step_times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        trainer.train()
        torch.cuda.synchronize()
        step_times.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= budget_s or (args.max_steps and len(step_times) >= args.max_steps):
            break
    images_per_step = CLI_DEFAULTS["batch_size"] * CLI_DEFAULTS["gradient_accumulate_every"]
    train_s = sum(step_times)
    warm = step_times[args.warmup_steps:]
    return {"steps": len(step_times), "images_per_step": images_per_step,
            "images_seen": len(step_times) * images_per_step, "train_seconds": round(train_s, 3),
            "images_per_second": round(len(step_times) * images_per_step / train_s, 2),
            "warm_images_per_second": round(len(warm) * images_per_step / sum(warm), 2) if warm else None,
            "last_d_loss": float(trainer.d_loss), "last_g_loss": float(trainer.g_loss)}


def write_samples(trainer, image_noise, noise_list, args: argparse.Namespace, out: Path) -> dict[str, str]:
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import peer_common as pc
    from PIL import Image
    gan = trainer.GAN
    gan.eval()
    latent_dim, num_layers, size = gan.G.latent_dim, gan.G.num_layers, trainer.image_size
    networks = {"ema": (gan.SE, gan.GE), "model": (gan.S, gan.G)}
    folders: dict[str, str] = {}
    for weights in args.weight_sets:
        S, G = networks[weights]
        for psi in args.psi_values:
            trainer.av = None  # the truncation centre is recomputed from this S
            seed_everything(CLI_DEFAULTS["seed"])
            folder = out / f"samples_{weights}_psi{psi:g}"
            folder.mkdir(parents=True, exist_ok=True)
            written = 0
            while written < args.num_samples:
                n = min(100, args.num_samples - written)
                with torch.no_grad():
                    images = trainer.generate_truncated(S, G, noise_list(n, num_layers, latent_dim, device=0),
                                                        image_noise(n, size, device=0), trunc_psi=psi)
                for array in pc.to_uint8_hwc(images):
                    written += 1
                    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(folder / f"{written}.png")
            folders[f"{weights}_psi{psi:g}"] = str(folder)
    return folders


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lucidrains_sg2_") as scratch_name:
        scratch = Path(scratch_name)
        folder = image_folder(args.data, scratch)
        site = unpack_wheels(args.wheels, scratch)
        plan = {"peer": PEER, "version": PEER_VERSION, "data": args.data, "images": str(folder),
                "image_size": args.image_size, "minutes": args.minutes, "cli_defaults": CLI_DEFAULTS}
        if args.dry_run:
            plan["num_images"] = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            plan["site"] = sorted(p.name for p in site.iterdir())
            print("RESULT " + json.dumps({**plan, "dry_run": True}, sort_keys=True), flush=True)
            return
        Trainer, image_noise, noise_list = import_peer(site)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import peer_common as pc
        import torch
        seed_everything(CLI_DEFAULTS["seed"])
        trainer = build_trainer(Trainer, args, scratch)
        trainer.set_data_src(str(folder))
        trainer.init_GAN()
        parameters = {name: sum(p.numel() for p in getattr(trainer.GAN, name).parameters())
                      for name in ("S", "G", "D")}
        training = train_for(trainer, args)
        sample_start = time.perf_counter()
        folders = write_samples(trainer, image_noise, noise_list, args, out)
        result = {**plan, **training, "parameters": parameters, "sample_folders": folders,
                  "sample_seconds": round(time.perf_counter() - sample_start, 1),
                  **pc.device_info(torch.device("cuda"))}
        (out / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str))
        pc.emit_result(result)


if __name__ == "__main__":
    main()
