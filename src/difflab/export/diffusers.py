"""Export a difflab run to a diffusers pipeline folder: a `UNet2DModel` plus a `DDIMScheduler`.

The U-Net maps block for block (see `difflab.network.unet`):

    difflab                                 diffusers UNet2DModel
    time_embed (sinusoid [cos, sin], MLP)   time_proj (flip_sin_to_cos=True, freq_shift=0), time_embedding
    stem                                    conv_in
    encoder[l].blocks[i].res / .attn        down_blocks[l].resnets[i] / .attentions[i]  (AttnDownBlock2D)
    encoder[l].downsample                   down_blocks[l].downsamplers[0]  (stride-2 3x3 conv)
    middle.res1, .attn, .res2               mid_block.resnets[0], .attentions[0], .resnets[1]
    decoder[j].blocks[i] / .upsample        up_blocks[j].resnets[i] (+ .attentions[i]) / .upsamplers[0]
    head_norm, head_conv                    conv_norm_out, conv_out

ResBlocks use the scale-shift time conditioning (`resnet_time_scale_shift="scale_shift"`); the
attention's fused 1x1 qkv convolution splits into to_q, to_k, to_v. What UNet2DModel cannot express
is refused with a ConfigError (`check_exportable`): one GroupNorm group count for every block, one
attention head width for every attention, and the network time t (difflab feeds t * 1000 / T).

Sampling with the exported folder reproduces difflab's DDIM (eta = 0) when the timesteps agree:
    pipe = DDIMPipeline.from_pretrained(folder)
    images = pipe(num_inference_steps=S, eta=0.0, use_clipped_model_output=True, output_type="np")
`use_clipped_model_output=True` re-derives the noise from the clipped x_0, as difflab does. The
scheduler uses diffusers' "trailing" spacing (T-1, T-1-T/S, ..., T/S-1); difflab's `--spacing uniform`
visits round(k (T-1) / (S-1)), ending at 0. They are the same sequence only for S = T, because diffusers'
DDIM always steps by T // S; for fewer steps the two samplers visit slightly different timesteps.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from difflab.diffusion.denoiser import model_time
from difflab.errors import OPTION, ConfigError
from difflab.network.layers import SelfAttention
from difflab.network.unet import UNet

if TYPE_CHECKING:
    from difflab.generation.model_io import LoadedModel

PREDICTION_TYPES = {"pred_noise": "epsilon", "pred_v": "v_prediction", "pred_x0": "sample"}
NETWORK_TIMESTEPS = 1000  # the network time scale difflab trains with (difflab.diffusion.denoiser.model_time)
DYNAMIC_PERCENTILE = 0.995  # difflab.diffusion.objectives.clip_x0's Imagen percentile
NO_THRESHOLD_CAP = 1e9  # diffusers caps the dynamic threshold at sample_max_value; difflab does not
MANIFEST = "difflab-export.json"
INSTALL_HINT = 'the diffusers export needs diffusers: pip install "difflab[diffusers]"'


def require_diffusers():
    try:
        import diffusers
    except ImportError as error:
        raise ConfigError(f"{INSTALL_HINT} ({error})") from None
    return diffusers


# ---- what can be mapped ----------------------------------------------------------------------------

def _options(network: UNet) -> str:
    c = network.config
    return (f"{{option:channels}} {c.base_channels}, {{option:dim_mults}} {','.join(map(str, c.dim_mults))}, "
            f"{{option:attn_head_channels}} {c.attn_head_channels}")


def norm_groups(network: UNet) -> int:
    """The one GroupNorm group count of every normalisation in `network` (UNet2DModel has a single
    `norm_num_groups`), or a ConfigError naming the widths that break it."""
    norms = [module for module in network.modules() if isinstance(module, nn.GroupNorm)]
    groups = {module.num_groups for module in norms}
    if len(groups) != 1:
        odd = sorted({module.num_channels for module in norms if module.num_groups != max(groups)})
        raise ConfigError(
            f"cannot export to diffusers: UNet2DModel uses one GroupNorm group count for every block, but this "
            f"network normalises widths {', '.join(map(str, odd))} with fewer than {max(groups)} groups "
            f"(difflab uses 32 groups, or the largest count that divides a narrower width). Every width, including "
            f"the decoder's concatenations, must be a multiple of 32: train with a {OPTION} that is a multiple "
            f"of 32 (this run: {_options(network)})", option="channels")
    eps = {module.eps for module in norms}
    if len(eps) != 1:
        raise ConfigError(f"cannot export to diffusers: the network's GroupNorms use different eps values {sorted(eps)}")
    return groups.pop()


def attention_head_dim(network: UNet) -> int | None:
    """UNet2DModel's `attention_head_dim`: one head width for every attention layer (None: one head
    per layer, as wide as the layer). difflab gives a layer narrower than --attn-head-channels one
    head of its own width, which one head width for all layers cannot express when widths mix."""
    layers = [module for module in network.modules() if isinstance(module, SelfAttention)]
    widths = sorted({(module.qkv.in_channels, module.num_heads) for module in layers})
    if all(heads == 1 for _, heads in widths):
        return None
    head = network.config.attn_head_channels
    bad = [(channels, heads) for channels, heads in widths if channels % head or channels // head != heads]
    if bad:
        described = "; ".join(f"width {c}: {h} head(s) of {c // h} channels" for c, h in widths)
        raise ConfigError(
            f"cannot export to diffusers: UNet2DModel gives every attention layer heads of one width, but this "
            f"network's attention layers have {described}. Widths narrower than {OPTION} get one head "
            f"of their own width; use an {OPTION} no larger than the narrowest attended width, or "
            f"attention only at widths of at least {OPTION} (this run: {_options(network)})",
            option="attn_head_channels")
    return head


def check_time_scale(timesteps: int) -> None:
    """UNet2DModel embeds the scheduler's integer timestep as it is; difflab's network sees
    t * 1000 / T (`model_time`), so only T = 1000 maps without changing the network."""
    probe = torch.tensor([1.0])
    if timesteps != NETWORK_TIMESTEPS or not torch.equal(model_time(probe, timesteps), probe):
        raise ConfigError(
            f"cannot export to diffusers: this run has {OPTION} {timesteps}; difflab feeds its network "
            f"t * {NETWORK_TIMESTEPS} / {timesteps}, while diffusers' UNet2DModel embeds the scheduler's timestep "
            f"t unscaled (its sinusoidal embedding has no time scale). Only runs with {OPTION} "
            f"{NETWORK_TIMESTEPS} can be exported", option="timesteps")


def unet2d_config(network: UNet) -> dict[str, Any]:
    """The `UNet2DModel` configuration that reproduces `network` (ConfigError where none does)."""
    if type(network) is not UNet:
        raise ConfigError(f"cannot export to diffusers: {type(network).__name__} is not difflab's U-Net")
    config = network.config
    groups = norm_groups(network)
    eps = next(module.eps for module in network.modules() if isinstance(module, nn.GroupNorm))
    head_dim = attention_head_dim(network)
    attended = [size in config.attn_resolutions for size in config.level_resolutions]
    if network.time_embed.sinusoid.frequencies.numel() * 2 + network.time_embed.sinusoid.pad != config.base_channels:
        raise ConfigError("cannot export to diffusers: the time embedding's sinusoid is not {option} wide",
                          option="channels")
    return {
        "sample_size": config.image_size,
        "in_channels": config.image_channels,
        "out_channels": config.image_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "freq_shift": 0,
        "flip_sin_to_cos": True,  # difflab's sinusoid is [cos, sin]
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attended],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attended)],
        "block_out_channels": list(config.level_channels),
        "layers_per_block": config.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": config.dropout,
        "act_fn": "silu",
        "attention_head_dim": head_dim,
        "norm_num_groups": groups,
        # Needed: with scale-shift ResBlocks, UNetMidBlock2D's attention has no GroupNorm unless given one.
        "attn_norm_num_groups": groups,
        "norm_eps": eps,
        "resnet_time_scale_shift": "scale_shift",
        "add_attention": True,
    }


# ---- weights ---------------------------------------------------------------------------------------

def _linear(weight: Tensor) -> Tensor:
    """A 1x1 convolution's weight (out, in, 1, 1) as a Linear weight (out, in)."""
    return weight.reshape(weight.shape[0], weight.shape[1])


def _resblock(state: dict[str, Tensor], source: str, target: str, out: dict[str, Tensor]) -> None:
    names = {"norm1": "norm1", "conv1": "conv1", "embed_proj": "time_emb_proj", "norm2": "norm2",
             "conv2": "conv2", "skip": "conv_shortcut"}
    for ours, theirs in names.items():
        for kind in ("weight", "bias"):
            key = f"{source}.{ours}.{kind}"
            if key in state:
                out[f"{target}.{theirs}.{kind}"] = state[key]


def _attention(state: dict[str, Tensor], source: str, target: str, out: dict[str, Tensor]) -> None:
    out[f"{target}.group_norm.weight"] = state[f"{source}.norm.weight"]
    out[f"{target}.group_norm.bias"] = state[f"{source}.norm.bias"]
    # difflab's qkv channels are (3, heads, head_dim): q, k, v in thirds, heads contiguous inside each.
    weights = _linear(state[f"{source}.qkv.weight"]).chunk(3, dim=0)
    biases = state[f"{source}.qkv.bias"].chunk(3, dim=0)
    for name, weight, bias in zip(("to_q", "to_k", "to_v"), weights, biases):
        out[f"{target}.{name}.weight"] = weight
        out[f"{target}.{name}.bias"] = bias
    out[f"{target}.to_out.0.weight"] = _linear(state[f"{source}.proj.weight"])
    out[f"{target}.to_out.0.bias"] = state[f"{source}.proj.bias"]


def diffusers_state_dict(network: UNet) -> dict[str, Tensor]:
    """`network`'s weights under UNet2DModel's parameter names (float32, contiguous copies)."""
    state = {key: value.detach().float().cpu() for key, value in network.state_dict().items()}
    out: dict[str, Tensor] = {}

    def copy(source: str, target: str) -> None:
        out[f"{target}.weight"] = state[f"{source}.weight"]
        out[f"{target}.bias"] = state[f"{source}.bias"]

    copy("time_embed.mlp.0", "time_embedding.linear_1")
    copy("time_embed.mlp.2", "time_embedding.linear_2")
    copy("stem", "conv_in")
    for level, encoder in enumerate(network.encoder):
        for i, block in enumerate(encoder.blocks):
            _resblock(state, f"encoder.{level}.blocks.{i}.res", f"down_blocks.{level}.resnets.{i}", out)
            if block.attn is not None:
                _attention(state, f"encoder.{level}.blocks.{i}.attn", f"down_blocks.{level}.attentions.{i}", out)
        if encoder.downsample is not None:
            copy(f"encoder.{level}.downsample.conv", f"down_blocks.{level}.downsamplers.0.conv")
    _resblock(state, "middle.res1", "mid_block.resnets.0", out)
    _attention(state, "middle.attn", "mid_block.attentions.0", out)
    _resblock(state, "middle.res2", "mid_block.resnets.1", out)
    for level, decoder in enumerate(network.decoder):
        for i, block in enumerate(decoder.blocks):
            _resblock(state, f"decoder.{level}.blocks.{i}.res", f"up_blocks.{level}.resnets.{i}", out)
            if block.attn is not None:
                _attention(state, f"decoder.{level}.blocks.{i}.attn", f"up_blocks.{level}.attentions.{i}", out)
        if decoder.upsample is not None:
            copy(f"decoder.{level}.upsample.conv", f"up_blocks.{level}.upsamplers.0.conv")
    copy("head_norm", "conv_norm_out")
    copy("head_conv", "conv_out")
    used = sum(value.numel() for value in out.values())
    if used != sum(value.numel() for value in state.values()):
        raise RuntimeError(f"difflab -> diffusers mapping covers {used} of the network's "
                           f"{sum(v.numel() for v in state.values())} weights; the U-Net layout has changed")
    return {key: value.contiguous() for key, value in out.items()}


def to_unet2d(network: UNet):
    """A diffusers `UNet2DModel` with `network`'s architecture and weights (in eval mode)."""
    diffusers = require_diffusers()
    unet = diffusers.UNet2DModel(**unet2d_config(network))
    state = diffusers_state_dict(network)
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [key for key in set(state) & set(expected) if state[key].shape != expected[key].shape]
    if missing or unexpected or shapes:
        raise RuntimeError(f"difflab -> diffusers mapping does not fit UNet2DModel (diffusers "
                           f"{diffusers.__version__}): missing {missing[:5]}, unexpected {unexpected[:5]}, "
                           f"shape mismatches {sorted(shapes)[:5]}")
    unet.load_state_dict(state, strict=True)
    return unet.eval().requires_grad_(False)


# ---- scheduler -------------------------------------------------------------------------------------

def scheduler_config(betas: Tensor, objective: str, clip: str) -> dict[str, Any]:
    """Keyword arguments of a diffusers `DDIMScheduler` (or `DDPMScheduler`) for the run's schedule,
    objective and x_0 clipping."""
    if objective not in PREDICTION_TYPES:
        raise ConfigError(f"cannot export to diffusers: objective {objective!r} has no diffusers prediction_type")
    if clip not in ("static", "dynamic", "none"):
        raise ConfigError(f"cannot export to diffusers: clip {clip!r} has no diffusers equivalent")
    return {
        "num_train_timesteps": int(betas.shape[0]),
        "trained_betas": [float(beta) for beta in betas.double()],
        "prediction_type": PREDICTION_TYPES[objective],
        "clip_sample": clip == "static",
        "clip_sample_range": 1.0,
        "thresholding": clip == "dynamic",
        "dynamic_thresholding_ratio": DYNAMIC_PERCENTILE,
        "sample_max_value": NO_THRESHOLD_CAP if clip == "dynamic" else 1.0,
        "set_alpha_to_one": True,  # difflab's last DDIM step goes to alpha_bar = 1 (the clean image)
        "steps_offset": 0,
        "timestep_spacing": "trailing",
    }


# ---- the folder ------------------------------------------------------------------------------------

def prepare_out(out: str | Path, overwrite: bool) -> Path:
    """An empty folder `out`. With `overwrite`, an earlier export there (a folder holding
    difflab-export.json) is replaced; any other non-empty folder is refused, so a mistyped --out
    never deletes someone's files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{OPTION} {out} is a file, not a folder", option="out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{OPTION} {out} is not empty; pass {{option:overwrite}} to replace an earlier export "
                              "there", option="out")
        if not (out / MANIFEST).is_file():
            raise ConfigError(f"{OPTION} {out} is not empty and holds no earlier difflab export ({MANIFEST}); "
                              "{option:overwrite} only replaces an export, choose an empty or new folder",
                              option="out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_for_export(run: str | Path, weights: str) -> "LoadedModel":
    """The run's diffusion model on the CPU, or a ConfigError for a run of another model family."""
    from difflab.generation.model_io import load_model
    from difflab.training.checkpoint import load_checkpoint

    family = load_checkpoint(run, groups=()).config.get("model", "diffusion")
    if family != "diffusion":
        raise ConfigError(f"cannot export {run}: only diffusion runs can be exported; this run trained {family!r}")
    loaded = load_model(run, device="cpu", weights=weights)
    from difflab.families.input_denoiser import INPUT_DENOISER, DenoisedInput
    if isinstance(loaded.network, DenoisedInput):
        raise ConfigError(f"cannot export {run}: it was trained with {{option}}, so its U-Net reads a frozen "
                          "denoiser's output instead of x_t, which the exported formats cannot express; only "
                          "runs without it export", option=INPUT_DENOISER)
    if not isinstance(loaded.network, UNet):
        raise ConfigError(f"cannot export {run}: its network is not difflab's U-Net")
    if loaded.schedule.conditioning != "timestep":
        raise ConfigError(f"cannot export {run}: its {{option}} {loaded.config.beta_schedule} conditions the network "
                          "on the noise level, and the exported formats feed it the integer timestep; only "
                          "timestep-conditioned schedules (linear, cosine, sigmoid) export", option="beta_schedule")
    return loaded


def export_diffusers(run: str | Path, out: str | Path, weights: str = "ema", overwrite: bool = False) -> Path:
    """Write `run`'s latest checkpoint (EMA or raw `weights`) as a diffusers DDIMPipeline folder
    (model_index.json, unet/ and scheduler/, safetensors weights) that
    `DDIMPipeline.from_pretrained(out)` loads. Returns `out`."""
    diffusers = require_diffusers()
    loaded = load_for_export(run, weights)
    check_time_scale(loaded.schedule.timesteps)
    unet = to_unet2d(loaded.network)  # every ConfigError before the folder is touched
    scheduler = diffusers.DDIMScheduler(**scheduler_config(
        loaded.schedule.float64["betas"], loaded.config.objective, loaded.config.clip))
    out = prepare_out(out, overwrite)
    pipeline = diffusers.DDIMPipeline(unet=unet, scheduler=scheduler)
    pipeline.save_pretrained(str(out), safe_serialization=True)
    write_manifest(out, loaded, weights, target="diffusers", diffusers_version=diffusers.__version__)
    return out


def write_manifest(out: Path, loaded: "LoadedModel", weights: str, **extra: Any) -> None:
    from difflab import __version__
    manifest = {
        "difflab_version": __version__,
        "checkpoint": str(loaded.checkpoint),
        "step": loaded.step,
        "weights": weights,
        "objective": loaded.config.objective,
        "clip": loaded.config.clip,
        "timesteps": loaded.schedule.timesteps,
        "beta_schedule": loaded.config.beta_schedule,
        "image_size": loaded.config.image_size,
        "image_channels": loaded.image_channels,
        **extra,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


__all__ = ["MANIFEST", "PREDICTION_TYPES", "attention_head_dim", "check_time_scale", "diffusers_state_dict",
           "export_diffusers", "load_for_export", "norm_groups", "prepare_out", "scheduler_config", "to_unet2d",
           "unet2d_config"]
