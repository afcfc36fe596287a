"""`difflab export`: a diffusers DDIMPipeline that reproduces difflab's DDIM, and an ONNX denoiser."""
import inspect
import json
from dataclasses import replace

import pytest
import torch

from difflab.cli.main import main
from difflab.config import TrainConfig
from difflab.errors import ConfigError
from difflab.network import UNet, UNetConfig
from difflab.training import train

# A tiny run that the diffusers U-Net can express: widths 32 and 64 (multiples of 32 GroupNorm groups),
# 2 attention heads of 32 at 8x8 and in the middle, and T = 1000 (diffusers feeds t unscaled).
EXPORTABLE = dict(data="shapes", image_size=16, channels=32, dim_mults="1,2", res_blocks=1, attn_resolutions="8",
                  attn_head_channels=32, timesteps=1000, batch_size=8, lr=1e-3, warmup_steps=0, steps=3,
                  save_every=3, log_every=1, grid_images=2, grid_sampler_steps=2, workers=0, ema_warmup_steps=0,
                  ema_decay=0.5, max_images=64)


def randomised(config: UNetConfig, seed: int = 0) -> UNet:
    """A U-Net with every weight random (a fresh one has zeroed output layers, which would hide mapping bugs)."""
    torch.manual_seed(seed)
    network = UNet(config).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.05)
    return network


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    train(TrainConfig.from_dict({**EXPORTABLE, "out": str(out)}).validate(), progress=False)
    return out


# ---- the U-Net mapping ------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    UNetConfig(image_channels=3, base_channels=32, dim_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
               attn_head_channels=64, image_size=16),  # one head per attention layer
    UNetConfig(image_channels=1, base_channels=32, dim_mults=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8, 4),
               attn_head_channels=16, image_size=16),  # grayscale, 4 heads, attention at two levels
    UNetConfig(image_channels=3, base_channels=64, dim_mults=(1,), num_res_blocks=1, attn_resolutions=(),
               image_size=8),  # one level: no resampling, attention only in the middle
], ids=["rgb-1-head", "gray-4-heads", "one-level"])
def test_unet2d_forward_equals_difflab_forward(config):
    pytest.importorskip("diffusers")
    from difflab.export.diffusers import to_unet2d

    network = randomised(config)
    unet = to_unet2d(network)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, config.image_channels, config.image_size, config.image_size, generator=generator)
    t = torch.tensor([0.0, 417.0, 999.0])
    with torch.no_grad():
        ours, theirs = network(x, t), unet(x, t).sample
    assert ours.abs().max() > 0.01  # a real signal, not two zero outputs
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in unet.parameters()) == network.num_parameters()


def test_widths_that_are_not_multiples_of_the_groups_are_refused():
    from difflab.export.diffusers import unet2d_config

    network = UNet(UNetConfig(base_channels=16, dim_mults=(1, 2), num_res_blocks=1, attn_resolutions=(),
                              image_size=16))
    with pytest.raises(ConfigError, match=r"multiple of 32.*channels 16"):
        unet2d_config(network)


def test_mixed_attention_head_widths_are_refused():
    from difflab.export.diffusers import unet2d_config

    # 32 wide at 16x16 (one head of 32: narrower than --attn-head-channels 64) and 128 wide at 8x8 (2 heads of 64).
    network = UNet(UNetConfig(base_channels=32, dim_mults=(1, 4), num_res_blocks=1, attn_resolutions=(16, 8),
                              attn_head_channels=64, image_size=16))
    with pytest.raises(ConfigError, match=r"heads of one width.*width 32: 1 head\(s\) of 32.*width 128: 2 head"):
        unet2d_config(network)


def test_runs_with_other_than_1000_timesteps_are_refused():
    from difflab.export.diffusers import check_time_scale

    check_time_scale(1000)
    with pytest.raises(ConfigError, match=r"timesteps 100.*unscaled"):
        check_time_scale(100)


def test_scheduler_config_names_the_objective_betas_and_clipping():
    from difflab.diffusion import make_beta_schedule
    from difflab.export.diffusers import scheduler_config

    betas = make_beta_schedule("cosine", 1000)
    config = scheduler_config(betas, "pred_v", "static")
    assert config["prediction_type"] == "v_prediction" and config["clip_sample"] and not config["thresholding"]
    assert config["trained_betas"] == betas.tolist() and config["num_train_timesteps"] == 1000
    assert scheduler_config(betas, "pred_noise", "none")["prediction_type"] == "epsilon"
    dynamic = scheduler_config(betas, "pred_x0", "dynamic")
    assert dynamic["prediction_type"] == "sample" and dynamic["thresholding"] and not dynamic["clip_sample"]


# ---- the exported pipeline --------------------------------------------------------------------------

def difflab_ddim(loaded, noise, steps, timesteps=None, clip=None):
    """difflab's own DDIM (eta = 0) from `noise`; over `timesteps` instead of its uniform spacing if given."""
    from difflab.generation import run_sampler
    import difflab.samplers.ddim as ddim

    if timesteps is None:
        return run_sampler(loaded, noise, "ddim", steps=steps, eta=0.0, clip=clip)
    if "timesteps" in inspect.signature(ddim.sample_ddim).parameters:  # samplers that take their timesteps
        return ddim.sample_ddim(loaded.denoiser(clip), noise, loaded.schedule, steps=steps, timesteps=timesteps)
    original = ddim.ddim_timesteps
    ddim.ddim_timesteps = lambda *args, **kwargs: list(timesteps)
    try:
        return ddim.sample_ddim(loaded.denoiser(clip), noise, loaded.schedule, steps=steps)
    finally:
        ddim.ddim_timesteps = original


def diffusers_ddim(pipe, batch, seed, steps):
    images = pipe(batch_size=batch, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
                  eta=0.0, use_clipped_model_output=True, output_type="np").images
    return torch.from_numpy(images).permute(0, 3, 1, 2)  # (B, H, W, C) in [0, 1] -> (B, C, H, W)


def as_unit_range(images):
    return (images / 2 + 0.5).clamp(0, 1)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    out = tmp_path_factory.mktemp("export") / "pipe"
    assert main(["export", str(run_dir), "--to", "diffusers", "--out", str(out), "--weights", "model"]) == 0
    pipe = diffusers.DDIMPipeline.from_pretrained(str(out))
    pipe.set_progress_bar_config(disable=True)
    return out, pipe


def test_export_folder_loads_as_a_ddim_pipeline(run_dir, exported):
    out, pipe = exported
    assert {"model_index.json", "difflab-export.json"} <= {p.name for p in out.iterdir()}
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    manifest = json.loads((out / "difflab-export.json").read_text())
    assert manifest["weights"] == "model" and manifest["step"] == 3 and manifest["objective"] == "pred_v"
    scheduler = pipe.scheduler.config
    assert scheduler.prediction_type == "v_prediction" and scheduler.clip_sample
    from difflab.generation import load_model
    loaded = load_model(run_dir, device="cpu", weights="model")
    assert torch.allclose(pipe.scheduler.betas.double(), loaded.schedule.float64["betas"], atol=1e-7)
    assert pipe.unet.config.attention_head_dim == 32 and pipe.unet.config.norm_num_groups == 32


@pytest.mark.slow  # 2 x 1000 network passes: ~30 s on 2 CPU cores
def test_pipeline_reproduces_difflab_ddim_over_all_timesteps(run_dir, exported):
    """S = T: difflab's uniform spacing and diffusers' spacing are the same sequence 999, ..., 0."""
    from difflab.generation import load_model

    _, pipe = exported
    loaded = load_model(run_dir, device="cpu", weights="model")
    steps = loaded.schedule.timesteps
    noise = torch.randn(2, *loaded.image_shape(), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        # The 3 training steps moved the zero-initialised output layer: the network's output is not ~0.
        assert loaded.network(noise, torch.full((2,), 500.0)).abs().mean() > 0.02
        ours = as_unit_range(difflab_ddim(loaded, noise, steps))
    theirs = diffusers_ddim(pipe, 2, 7, steps)
    assert ours.std() > 0.05  # images, not a constant
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)  # measured: 6e-6


def trailing(timesteps, steps):
    """diffusers' "trailing" DDIM timesteps (the exported scheduler's spacing)."""
    ratio = timesteps / steps
    return [int(round(timesteps - i * ratio)) - 1 for i in range(steps)]


@pytest.mark.parametrize("objective", ["pred_v", "pred_noise", "pred_x0"])
@pytest.mark.parametrize("clip", ["static", "dynamic", "none"])
def test_scheduler_reproduces_difflab_ddim_for_each_objective_and_clip(run_dir, exported, objective, clip):
    """Few steps, over the exported scheduler's timesteps: the same network read as each objective,
    with each clipping mode, through a scheduler built from `scheduler_config`."""
    diffusers = pytest.importorskip("diffusers")
    from difflab.export.diffusers import scheduler_config
    from difflab.generation import load_model

    _, pipe = exported
    loaded = load_model(run_dir, device="cpu", weights="model")
    loaded = replace(loaded, config=replace(loaded.config, objective=objective, clip=clip))
    scheduler = diffusers.DDIMScheduler(**scheduler_config(loaded.schedule.float64["betas"], objective, clip))
    custom = diffusers.DDIMPipeline(unet=pipe.unet, scheduler=scheduler)
    custom.set_progress_bar_config(disable=True)
    steps = 8
    noise = torch.randn(2, *loaded.image_shape(), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = as_unit_range(difflab_ddim(loaded, noise, steps, trailing(1000, steps)))
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == trailing(1000, steps)
    theirs = diffusers_ddim(custom, 2, 3, steps)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)  # measured: <= 3e-7


def test_export_refuses_a_folder_that_is_not_an_earlier_export(run_dir, tmp_path):
    pytest.importorskip("diffusers")
    from difflab.export import export_diffusers

    out = tmp_path / "pipe"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_diffusers(run_dir, out)
    with pytest.raises(ConfigError, match="holds no earlier difflab export"):
        export_diffusers(run_dir, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    export_diffusers(run_dir, out)
    export_diffusers(run_dir, out, overwrite=True)  # replaces its own earlier export


def test_export_cli_reports_an_unmappable_run_as_a_usage_error(tmp_path, capsys):
    pytest.importorskip("diffusers")
    run = tmp_path / "run"
    train(TrainConfig.from_dict({**EXPORTABLE, "out": str(run), "channels": 16, "steps": 1, "save_every": 1}).validate(), progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run), "--to", "diffusers", "--out", str(tmp_path / "pipe")])
    assert exit_info.value.code == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "pipe").exists()


# ---- ONNX -------------------------------------------------------------------------------------------

def test_onnx_export_matches_the_network(run_dir, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from difflab.diffusion.denoiser import model_time
    from difflab.generation import load_model

    out = tmp_path / "onnx"
    assert main(["export", str(run_dir), "--to", "onnx", "--out", str(out)]) == 0
    manifest = json.loads((out / "difflab-export.json").read_text())
    assert manifest["file"] == "denoiser.onnx" and manifest["onnxruntime_max_difference"] < 1e-4
    assert len(manifest["betas"]) == 1000

    loaded = load_model(run_dir, device="cpu", weights="ema")
    with torch.no_grad():
        for parameter in loaded.network.parameters():  # the trained output layer is still near zero
            parameter.add_(0.05 * torch.randn_like(parameter))
    from difflab.export.onnx import export_network
    path = export_network(loaded.network, 1000, loaded.image_shape(), tmp_path / "random.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, *loaded.image_shape(), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 1.0, 250.0, 500.0, 999.0])
    (output,) = session.run(None, {"x": x.numpy(), "t": t.numpy()})
    with torch.no_grad():
        expected = loaded.network(x, model_time(t, 1000))
    assert expected.abs().max() > 0.01
    torch.testing.assert_close(torch.from_numpy(output), expected, rtol=1e-4, atol=1e-5)


def test_onnx_export_scales_time_for_other_timesteps(tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from difflab.export.onnx import export_network

    config = UNetConfig(base_channels=16, dim_mults=(1, 2), num_res_blocks=1, attn_resolutions=(8,), image_size=16)
    network = randomised(config)
    path = export_network(network, 100, (3, 16, 16), tmp_path / "denoiser.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([37.0])
    (output,) = session.run(None, {"x": x.numpy(), "t": t.numpy()})
    with torch.no_grad():
        expected = network(x, torch.tensor([370.0]))  # t in the run's 100 steps -> network time 370
    torch.testing.assert_close(torch.from_numpy(output), expected, rtol=1e-4, atol=1e-5)
