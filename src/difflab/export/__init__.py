"""Export a trained run for other tools: a diffusers pipeline folder, or the denoiser as ONNX.

    from difflab.export import export_diffusers, export_onnx
    export_diffusers("runs/anime", "pipe/")   # DDIMPipeline.from_pretrained("pipe/")
    export_onnx("runs/anime", "onnx/")        # onnx/denoiser.onnx, inputs x and t

Neither diffusers nor onnx is imported until an export runs (both are optional extras).
"""
from __future__ import annotations

from typing import Any

TARGETS = ("diffusers", "onnx")


def export_diffusers(run: Any, out: Any, weights: str = "ema", overwrite: bool = False):
    """See `difflab.export.diffusers.export_diffusers`."""
    from difflab.export.diffusers import export_diffusers as export
    return export(run, out, weights=weights, overwrite=overwrite)


def export_onnx(run: Any, out: Any, weights: str = "ema", overwrite: bool = False):
    """See `difflab.export.onnx.export_onnx`."""
    from difflab.export.onnx import export_onnx as export
    return export(run, out, weights=weights, overwrite=overwrite)


__all__ = ["TARGETS", "export_diffusers", "export_onnx"]
