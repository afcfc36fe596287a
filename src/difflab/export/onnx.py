"""Export a run's denoising network to ONNX: `denoiser.onnx`, inputs x (B, C, H, W) and t (B,).

`t` is the diffusion timestep in the run's own units, 0 .. T-1 (float32; the graph applies difflab's
`model_time` scaling to 0 .. 1000 inside), and the output is the raw network prediction: the noise,
x_0 or v, as the run's objective says (recorded in difflab-export.json beside it, with the betas).
The batch dimension is dynamic. The graph is checked against the PyTorch network with onnxruntime
when that is installed.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.diffusion.denoiser import model_time
from difflab.errors import ConfigError
from difflab.export.diffusers import load_for_export, prepare_out, write_manifest

FILENAME = "denoiser.onnx"
OPSET = 18
INSTALL_HINT = 'the ONNX export needs onnx (and onnxruntime to check it): pip install "difflab[onnx]"'


class TimedNetwork(nn.Module):
    """The network with difflab's time convention built in: forward(x, t) with t in 0 .. T-1."""

    def __init__(self, network: nn.Module, timesteps: int):
        super().__init__()
        self.network = network
        self.timesteps = timesteps

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.network(x, model_time(t, self.timesteps))


def require_onnx():
    try:
        import onnx
    except ImportError as error:
        raise ConfigError(f"{INSTALL_HINT} ({error})") from None
    return onnx


def export_network(network: nn.Module, timesteps: int, image_shape: tuple[int, int, int], path: str | Path,
                   batch: int = 2) -> Path:
    """Write `network` (wrapped in `TimedNetwork`) to the ONNX file `path`, with a dynamic batch."""
    require_onnx()
    module = TimedNetwork(network, timesteps).eval()
    x = torch.randn(batch, *image_shape)
    t = torch.linspace(0, timesteps - 1, batch)
    path = Path(path)
    names = {"input_names": ["x", "t"], "output_names": ["prediction"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes that are fixed on purpose
        try:
            # The TorchScript-based exporter: needs no onnxscript, takes ~1 s, and matches the network
            # to ~1e-7 under onnxruntime (torch 2.13).
            torch.onnx.export(module, (x, t), str(path), opset_version=OPSET, dynamo=False,
                              dynamic_axes={"x": {0: "batch"}, "t": {0: "batch"}, "prediction": {0: "batch"}},
                              **names)
        except Exception as error:  # a torch without it: the dynamo exporter (needs onnxscript)
            try:
                import onnxscript  # noqa: F401
            except ImportError:
                raise ConfigError(f"torch's TorchScript ONNX exporter failed ({error}) and its dynamo exporter "
                                  f"needs onnxscript: pip install onnxscript") from None
            batch_dim = torch.export.Dim("batch")
            torch.onnx.export(module, (x, t), str(path), dynamo=True,
                              dynamic_shapes={"x": {0: batch_dim}, "t": {0: batch_dim}}, **names)
    return path


def check_with_onnxruntime(network: nn.Module, timesteps: int, image_shape: tuple[int, int, int],
                           path: str | Path, batch: int = 3, seed: int = 0) -> float | None:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on random input (at a
    batch size other than the exported one), or None where onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *image_shape, generator=generator)
    t = torch.randint(0, timesteps, (batch,), generator=generator).float()
    with torch.no_grad():
        expected = TimedNetwork(network, timesteps).eval()(x, t)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": x.numpy(), "t": t.numpy()})
    return float((torch.from_numpy(output) - expected).abs().max())


def export_onnx(run: str | Path, out: str | Path, weights: str = "ema", overwrite: bool = False,
                tolerance: float = 1e-3) -> dict[str, Any]:
    """Write `run`'s denoiser to `out`/denoiser.onnx plus difflab-export.json (objective, schedule,
    betas), check it with onnxruntime if installed, and return the manifest."""
    onnx = require_onnx()
    loaded = load_for_export(run, weights)
    out = prepare_out(out, overwrite)
    path = export_network(loaded.network, loaded.schedule.timesteps, loaded.image_shape(), out / FILENAME)
    onnx.checker.check_model(str(path))
    difference = check_with_onnxruntime(loaded.network, loaded.schedule.timesteps, loaded.image_shape(), path)
    if difference is not None and not difference <= tolerance:
        raise RuntimeError(f"the ONNX graph in {path} differs from the PyTorch network by {difference:.3g} "
                           f"(more than {tolerance:g}) under onnxruntime")
    extra = {
        "target": "onnx",
        "file": FILENAME,
        "inputs": {"x": "float32 (batch, channels, height, width), in [-1, 1] data units",
                   "t": "float32 (batch,), the diffusion timestep 0 .. timesteps-1"},
        "output": {"prediction": {"pred_noise": "the noise", "pred_x0": "the clean image x_0",
                                  "pred_v": "v = sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) x_0"}[
                                      loaded.config.objective]},
        "opset": OPSET,
        "onnxruntime_max_difference": difference,
        "betas": [float(beta) for beta in loaded.schedule.float64["betas"]],
    }
    write_manifest(out, loaded, weights, **extra)
    return {"path": str(path), **extra}
