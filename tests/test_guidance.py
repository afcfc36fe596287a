"""Autoguidance (Karras et al. 2024): the math of the mix, and `--guide` through the command line."""
import json

import pytest
import torch
from torch import nn

from difflab.cli.main import main
from difflab.diffusion import DiffusionSchedule, make_beta_schedule, make_denoiser
from difflab.diffusion.guidance import AutoGuidedNetwork


class Affine(nn.Module):
    """A stand-in network: output = scale * x + shift(t)."""

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x, t):
        return self.scale * x + self.shift * (t.reshape(-1, 1, 1, 1) / 1000)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_guided_denoiser_is_the_papers_mix_of_the_two_denoisers(objective):
    """D_guide + w (D_main - D_guide) in x0, for every objective (the mix is done on outputs)."""
    schedule = DiffusionSchedule(make_beta_schedule("cosine", 100))
    main_net, guide_net = Affine(0.3, 0.5), Affine(-0.2, 1.5)
    x_t, t = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 30, 60, 99])
    main_x0 = make_denoiser(main_net, schedule, objective, clip="none")(x_t, t).pred_x0
    guide_x0 = make_denoiser(guide_net, schedule, objective, clip="none")(x_t, t).pred_x0
    for weight in (0.0, 1.0, 2.5):
        guided = make_denoiser(AutoGuidedNetwork(main_net, guide_net, weight), schedule, objective, clip="none")
        expected = guide_x0 + weight * (main_x0 - guide_x0)
        torch.testing.assert_close(guided(x_t, t).pred_x0, expected, rtol=1e-5, atol=1e-5)
    # Weight 1 is the main network exactly, not approximately.
    assert torch.equal(AutoGuidedNetwork(main_net, guide_net, 1.0)(x_t, t), main_net(x_t, t))


def test_no_guidance_below_min_time():
    """Below min_time each sample gets the main network's output exactly; from it on, the mix."""
    main_net, guide_net = Affine(0.3, 0.5), Affine(-0.2, 1.5)
    x, t = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0)), torch.tensor([0.0, 99.0, 100.0, 900.0])
    output = AutoGuidedNetwork(main_net, guide_net, 3.5, min_time=100.0)(x, t)
    mixed = torch.lerp(guide_net(x, t), main_net(x, t), 3.5)
    assert torch.equal(output[:2], main_net(x, t)[:2])
    assert torch.equal(output[2:], mixed[2:])
    assert not torch.allclose(output[:2], mixed[:2])


@pytest.fixture(scope="module")
def run_with_checkpoints(tmp_path_factory, shared_data):
    run = tmp_path_factory.mktemp("guide") / "anime"
    assert main(["train", str(shared_data / "anime-faces-96px-2k.zip"), "--out", str(run), "--image-size", "16",
                 "--channels", "16", "--dim-mults", "1,2", "--attn-resolutions", "8", "--res-blocks", "1",
                 "--timesteps", "50", "--batch-size", "8", "--steps", "10", "--save-every", "2", "--keep-checkpoints", "10",
                 "--grid-images", "4", "--grid-sampler-steps", "2", "--max-images", "64", "--no-progress",
                 "--workers", "0"]) == 0
    return run


def sample(run, out, *extra):
    return main(["sample", str(run), "-n", "4", "--steps", "4", "--format", "png", "--out", str(out),
                 "--no-progress", *extra])


def test_sample_with_guide_auto_uses_an_earlier_checkpoint(run_with_checkpoints, tmp_path):
    assert sample(run_with_checkpoints, tmp_path / "guided", "--guide", "auto") == 0
    guidance = json.loads((tmp_path / "guided" / "difflab-sample.json").read_text())["guidance"]
    assert guidance["guide_step"] == 4 and guidance["weight"] == 2.5  # nearest 40% of 10 steps
    assert guidance["min_t"] == 5  # default: no guidance below T / 10 (T = 50)
    assert sample(run_with_checkpoints, tmp_path / "plain") == 0
    assert (tmp_path / "guided" / "1.png").read_bytes() != (tmp_path / "plain" / "1.png").read_bytes()
    # Weight 1 switches guidance off: the very same images as without a guide.
    assert sample(run_with_checkpoints, tmp_path / "w1", "--guide", "auto", "--guidance", "1") == 0
    for index in range(1, 5):
        assert (tmp_path / "w1" / f"{index}.png").read_bytes() == (tmp_path / "plain" / f"{index}.png").read_bytes()


def test_guide_fraction_picks_the_checkpoint_nearest_that_share(run_with_checkpoints, tmp_path):
    assert sample(run_with_checkpoints, tmp_path / "g", "--guide", "auto", "--guide-fraction", "0.2") == 0
    assert json.loads((tmp_path / "g" / "difflab-sample.json").read_text())["guidance"]["guide_step"] == 2


def test_guide_min_t_is_recorded_and_changes_only_the_last_steps(run_with_checkpoints, tmp_path):
    assert sample(run_with_checkpoints, tmp_path / "all", "--guide", "auto", "--guide-min-t", "0") == 0
    assert json.loads((tmp_path / "all" / "difflab-sample.json").read_text())["guidance"]["min_t"] == 0
    # DDIM-4 over T = 50 visits t = 49, 33, 16, 0: min-t 17 leaves the last two steps unguided,
    # min-t 49 all but the first, and min-t 0 none; each gives other images.
    for min_t in ("17", "49"):
        assert sample(run_with_checkpoints, tmp_path / min_t, "--guide", "auto", "--guide-min-t", min_t) == 0
    pictures = {name: (tmp_path / name / "1.png").read_bytes() for name in ("all", "17", "49")}
    assert len(set(pictures.values())) == 3


def test_progress_takes_a_guide_file(run_with_checkpoints, tmp_path):
    guide = str(run_with_checkpoints / "checkpoints" / "ckpt-00000002.safetensors")
    assert main(["progress", str(run_with_checkpoints), "-n", "2", "--frames", "3", "--steps", "4", "--guide", guide,
                 "--out", str(tmp_path / "p.png"), "--no-progress"]) == 0
    assert (tmp_path / "p.png").is_file()


def test_guide_errors_name_the_option(run_with_checkpoints, tmp_path, capsys, shared_data):
    with pytest.raises(SystemExit):
        sample(run_with_checkpoints, tmp_path / "a", "--guidance", "2")
    assert "--guidance needs --guide" in capsys.readouterr().err
    first_file = str(run_with_checkpoints / "checkpoints" / "ckpt-00000002.safetensors")
    for extra, message in [(("--guide", first_file, "--guide-fraction", "0.3"), "--guide-fraction needs --guide auto"),
                           (("--guide", "auto", "--guide-fraction", "1.5"), "--guide-fraction must lie between 0 and 1"),
                           (("--guide-min-t", "3"), "--guide-min-t needs --guide"),
                           (("--guide", "auto", "--guide-min-t", "-1"), "--guide-min-t must be >= 0"),
                           (("--guide", "auto", "--guide-min-t", "50"), "below the model's --timesteps (50)")]:
        with pytest.raises(SystemExit):
            sample(run_with_checkpoints, tmp_path / "a", *extra)
        assert message in capsys.readouterr().err
    first = run_with_checkpoints / "checkpoints" / "ckpt-00000002.safetensors"
    with pytest.raises(SystemExit):
        sample(first, tmp_path / "b", "--guide", "auto")
    assert "--guide auto needs an earlier checkpoint" in capsys.readouterr().err
    other = tmp_path / "other"  # a model of another image size cannot guide this one
    assert main(["train", "shapes", "--out", str(other), "--image-size", "8", "--channels", "16", "--dim-mults", "1,2",
                 "--attn-resolutions", "", "--res-blocks", "1", "--timesteps", "50", "--batch-size", "8",
                 "--steps", "1", "--grid-images", "1", "--grid-sampler-steps", "1", "--no-progress",
                 "--workers", "0"]) == 0
    with pytest.raises(SystemExit):
        sample(run_with_checkpoints, tmp_path / "c", "--guide", str(other))
    assert "does not match the model: image shape" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
