"""`difflab export RUN --to diffusers|onnx --out DIR`: the run's model for diffusers or ONNX runtimes."""
from __future__ import annotations

import argparse

from difflab.export import TARGETS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a run's model as a diffusers pipeline folder or an ONNX denoiser",
        description="diffusers: a UNet2DModel and a DDIMScheduler with the run's betas, prediction type and "
                    "clipping, loadable with DDIMPipeline.from_pretrained(DIR) (needs difflab[diffusers]; the run "
                    "must have --timesteps 1000 and widths that are multiples of 32). onnx: DIR/denoiser.onnx, "
                    "inputs x (B, C, H, W) and t (B,) in the run's timesteps, output the raw prediction, checked "
                    "with onnxruntime when installed (needs difflab[onnx]).")
    parser.add_argument("run", help="run folder made by `difflab train`, or a ckpt-*.safetensors file")
    parser.add_argument("--to", choices=TARGETS, required=True, help="diffusers or onnx")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (new or empty)")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.to == "diffusers":
        from difflab.export.diffusers import export_diffusers
        out = export_diffusers(args.run, args.out, weights=args.weights, overwrite=args.overwrite)
        print(f"wrote a diffusers DDIMPipeline to {out}: DDIMPipeline.from_pretrained({str(out)!r}); "
              "pass use_clipped_model_output=True to sample as difflab does")
        return 0
    from difflab.export.onnx import export_onnx
    manifest = export_onnx(args.run, args.out, weights=args.weights, overwrite=args.overwrite)
    difference = manifest["onnxruntime_max_difference"]
    check = ("not checked (onnxruntime is not installed)" if difference is None
             else f"onnxruntime matches PyTorch to {difference:.2g}")
    print(f"wrote {manifest['path']}: {check}")
    return 0
