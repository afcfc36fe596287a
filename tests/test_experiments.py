"""difflab progress / fuse / compare / report, and the samplers' start_step, on a tiny model.

The model is trained for a few steps only: these tests check structure and correctness
(where snapshots come from, exact endpoints, row order, honest n/a), not image quality.
"""
from __future__ import annotations

import base64
import io
import json
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.cli.main import main
from difflab.diffusion import DiffusionSchedule, Predictions, make_beta_schedule, q_sample
from difflab.diffusion.objectives import noise_from_x0
from difflab.errors import ConfigError
from difflab.experiments.fusion import FusionSettings, fuse, mix_noisy, slerp
from difflab.experiments.progress import (evenly_spaced_frames, frames_at_timesteps, record_progress,
                                          visited_timesteps)
from difflab.experiments.study import parse_sampler_specs
from difflab.generation import generate_images, load_model, run_sampler
from difflab.samplers import invert_ddim, sample_ddim, sample_ddpm
from difflab.viz.figures import LABEL_HEIGHT, PADDING, row_label_width
from difflab.viz.grid import to_uint8

TIMESTEPS = 50  # a short schedule keeps DDPM runs quick on a CPU
IMAGE_SIZE = 16


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("experiments") / "run"
    code = main(["train", "shapes", "--out", str(run), "--image-size", str(IMAGE_SIZE), "--channels", "16",
                 "--dim-mults", "1,2", "--res-blocks", "1", "--attn-resolutions", "8", "--batch-size", "8",
                 "--steps", "10", "--save-every", "10", "--log-every", "5", "--timesteps", str(TIMESTEPS),
                 "--grid-images", "4", "--grid-sampler-steps", "2", "--no-progress"])
    assert code == 0
    return run


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory, shared_data) -> Path:
    """Twelve real anime faces as a folder (read from the shared zip, never copied into the repo)."""
    folder = tmp_path_factory.mktemp("faces")
    with zipfile.ZipFile(shared_data / "anime-faces-96px-2k.zip") as archive:
        for member in sorted(n for n in archive.namelist() if n.endswith(".jpg"))[:12]:
            (folder / Path(member).name).write_bytes(archive.read(member))
    return folder


@pytest.fixture(scope="module")
def scoring_flags(shared_eval, shared_data) -> list[str]:
    return ["--features", f"{shared_eval}/featnet.py:cifar10",
            "--detector-weights", str(shared_data / "lbpcascade_animeface.xml"), "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def study(tiny_run, real_faces, scoring_flags, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "study"
    assert main(["compare", str(tiny_run), "--samplers", "ddim:2,ddim:4", "-n", "8", "--batch-size", "4",
                 "--real", str(real_faces), "--out", str(out), *scoring_flags]) == 0
    return out


def recording_denoiser(schedule: DiffusionSchedule, seen: list[int]):
    """A stand-in network whose guess of x_0 is a fixed shrinkage of x_t; records each t it is asked at."""
    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> Predictions:
        seen.append(int(t[0]))
        signal, noise = schedule.at("signal_rates", t, x_t), schedule.at("noise_rates", t, x_t)
        pred_x0 = (0.5 * x_t).clamp(-1, 1)
        return Predictions(noise_from_x0(x_t, pred_x0, signal, noise), pred_x0)
    return denoise


# --- samplers: start_step -------------------------------------------------------------


def test_samplers_start_part_way_when_asked():
    schedule = DiffusionSchedule(make_beta_schedule("linear", TIMESTEPS))
    x = torch.randn(2, 1, 4, 4)
    seen: list[int] = []
    sample_ddpm(recording_denoiser(schedule, seen), x, schedule, start_step=9)
    assert seen == list(range(9, -1, -1))
    seen.clear()
    sample_ddim(recording_denoiser(schedule, seen), x, schedule, steps=4, start_step=30)
    assert seen[0] == 30 and seen[-1] == 0 and len(seen) == 4
    seen.clear()
    sample_ddim(recording_denoiser(schedule, seen), x, schedule, steps=4)  # the default is unchanged
    assert seen[0] == TIMESTEPS - 1 and len(seen) == 4
    with pytest.raises(ConfigError, match="start_step"):
        sample_ddpm(recording_denoiser(schedule, []), x, schedule, start_step=TIMESTEPS)


def test_ddim_with_eta_1_over_every_step_is_ddpm():
    """docs/concepts.md: with eta = 1 on all T steps, sigma^2 is DDPM's posterior variance
    and the DDIM update is DDPM's ancestral step (same noise stream, same result)."""
    schedule = DiffusionSchedule(make_beta_schedule("linear", TIMESTEPS))
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ddpm = sample_ddpm(recording_denoiser(schedule, []), x, schedule, generator=torch.Generator().manual_seed(2))
    ddim = sample_ddim(recording_denoiser(schedule, []), x, schedule, steps=TIMESTEPS, eta=1.0,
                       generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


# --- progress -----------------------------------------------------------------------------


def test_frame_choice():
    assert evenly_spaced_frames(1000, 10) == [0, 111, 222, 333, 444, 556, 667, 778, 889]
    assert evenly_spaced_frames(4, 5) == [0, 1, 2, 3]  # every step, then the result
    with pytest.raises(ConfigError, match="frames"):
        evenly_spaced_frames(4, 6)
    visited = visited_timesteps(1000, "ddim", 10)
    assert frames_at_timesteps(visited, [999, 500, 0]) == [0, 5, 9]
    assert visited[5] <= 500 < visited[4]


def test_progress_snapshots_come_from_the_sampler(loaded):
    noise = torch.randn(2, *loaded.image_shape(), generator=torch.Generator().manual_seed(0))
    progress = record_progress(loaded, noise, [0, 2], "ddim", steps=4)
    assert progress.labels == [f"t={visited_timesteps(TIMESTEPS, 'ddim', 4)[i]}" for i in (0, 2)] + ["x0"]
    assert progress.noisy.shape == (2, 3, *loaded.image_shape())
    assert torch.equal(progress.noisy[:, 0], to_uint8(noise))  # the first snapshot is x_T itself
    with torch.inference_mode():
        sampled = to_uint8(run_sampler(loaded, noise, "ddim", 4))
    assert torch.equal(progress.final, sampled)
    assert not torch.equal(progress.predicted[:, 1], progress.noisy[:, 1])


def test_progress_with_dpm_solver_ends_on_the_sampled_image(tiny_run, loaded, tmp_path):
    png = tmp_path / "dpm.png"
    assert main(["progress", str(tiny_run), "-n", "1", "--frames", "3", "--sampler", "dpmpp-2m", "--steps", "4",
                 "--scale", "1", "--out", str(png), "--device", "cpu", "--precision", "no", "--no-progress"]) == 0
    _, expected = next(generate_images(loaded, 1, sampler="dpmpp-2m", steps=4, seed=0))  # fp32, as --precision no
    figure = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1)
    left = row_label_width(None)
    top, x = LABEL_HEIGHT + PADDING, left + PADDING + 2 * (IMAGE_SIZE + PADDING)
    assert torch.equal(figure[:, top:top + IMAGE_SIZE, x:x + IMAGE_SIZE], expected[0])


@pytest.mark.parametrize("show_x0", [False, True])
def test_progress_command_writes_figure_and_gif(tiny_run, loaded, tmp_path, show_x0):
    png, gif = tmp_path / "q1.png", tmp_path / "q1.gif"
    flags = ["--show-x0"] if show_x0 else []
    assert main(["progress", str(tiny_run), "-n", "2", "--frames", "3", "--sampler", "ddim", "--steps", "4",
                 "--scale", "2", "--out", str(png), "--gif", str(gif), "--device", "cpu", "--no-progress",
                 *flags]) == 0
    rows, columns, cell = (4 if show_x0 else 2), 3, IMAGE_SIZE * 2
    left = row_label_width(["x_t", "pred x0"] if show_x0 else None)
    figure = Image.open(png).convert("RGB")
    width, height = left + columns * (cell + PADDING) + PADDING, LABEL_HEIGHT + rows * (cell + PADDING) + PADDING
    assert figure.size == (width, height)
    assert Image.open(gif).n_frames == columns

    # The last column is what `difflab sample` makes with the same seed.
    _, expected = next(generate_images(loaded, 2, sampler="ddim", steps=4, seed=0))
    for sample in range(2):
        row = sample * (2 if show_x0 else 1)
        top, x = LABEL_HEIGHT + PADDING + row * (cell + PADDING), left + PADDING + 2 * (cell + PADDING)
        shown = torch.from_numpy(np.array(figure.crop((x, top, x + cell, top + cell))))
        assert torch.equal(shown[::2, ::2].permute(2, 0, 1), expected[sample])


# --- fusion -------------------------------------------------------------------------------


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    x, y = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])  # orthogonal, equal norms
    for lam in (0.1, 0.5, 0.8):
        mixed = slerp(x, y, lam)
        assert mixed.norm().item() == pytest.approx(3.0, rel=1e-6)
        assert torch.atan2(mixed[0, 1], mixed[0, 0]).item() == pytest.approx(lam * torch.pi / 2, rel=1e-5)
    assert torch.allclose(slerp(x, 2 * x, 0.5), 1.5 * x)  # parallel: a straight mix


def test_mix_noisy_shared_and_independent_noise(loaded):
    images_a = torch.rand(1, *loaded.image_shape()) * 2 - 1
    images_b = torch.rand(1, *loaded.image_shape()) * 2 - 1
    t, lams = 20, torch.tensor([0.0, 0.3, 1.0])
    mixed = mix_noisy(loaded, images_a, images_b, lams, t, "shared", torch.Generator().manual_seed(5))
    noise = torch.randn(images_a.shape, generator=torch.Generator().manual_seed(5))
    steps = torch.full((1,), t)
    torch.testing.assert_close(mixed[0], q_sample(loaded.schedule, images_a, steps, noise)[0])
    torch.testing.assert_close(mixed[2], q_sample(loaded.schedule, images_b, steps, noise)[0])
    blend = 0.7 * images_a + 0.3 * images_b  # shared noise: the noised pixel blend
    torch.testing.assert_close(mixed[1], q_sample(loaded.schedule, blend, steps, noise)[0])

    zeros = torch.zeros(1, 3, 64, 64)  # independent noises shrink the noise std by sqrt((1-l)^2 + l^2)
    independent = mix_noisy(loaded, zeros, zeros, torch.tensor([0.5]), t, "independent",
                            torch.Generator().manual_seed(0))
    expected_std = loaded.schedule.noise_rates[t].item() * 0.5**0.5
    assert independent.std().item() == pytest.approx(expected_std, rel=0.05)


def test_ddim_slerp_endpoints_are_the_decoded_inversions(loaded):
    images = torch.rand(2, *loaded.image_shape(), generator=torch.Generator().manual_seed(3)) * 2 - 1
    settings = FusionSettings("ddim-slerp", steps=5)
    fused = fuse(loaded, images[:1], images[1:], torch.tensor([0.0, 1.0]), settings)
    with torch.inference_mode():
        latents = invert_ddim(loaded.denoiser(), images, loaded.schedule, steps=5)
        decoded = run_sampler(loaded, latents, "ddim", 5)
    torch.testing.assert_close(fused, decoded)


def test_noise_mix_at_a_small_t_keeps_the_endpoint_image(loaded):
    images = torch.rand(2, *loaded.image_shape(), generator=torch.Generator().manual_seed(4)) * 2 - 1
    fused = fuse(loaded, images[:1], images[1:], torch.tensor([0.0, 1.0]), FusionSettings("noise-mix", t=0),
                 torch.Generator().manual_seed(0))
    assert (fused[0] - images[0]).abs().mean() < 0.1
    assert (fused[1] - images[1]).abs().mean() < 0.1
    assert (fused[0] - images[1]).abs().mean() > 0.3


def test_fusion_settings_are_checked():
    with pytest.raises(ConfigError, match="method"):
        FusionSettings("average").check()
    with pytest.raises(ConfigError, match="t applies to method noise-mix"):
        FusionSettings("ddim-slerp", t=10).check()
    FusionSettings("noise-mix", steps=10).check()  # DDPM (the default) takes --steps too, respaced
    with pytest.raises(ConfigError, match="eta"):
        FusionSettings("noise-mix", eta=1.0).check()  # DDPM has no eta


def test_fuse_command_single_pair_and_strip(tiny_run, real_faces, tmp_path):
    a, b = sorted(real_faces.iterdir())[:2]
    out = tmp_path / "fused.png"
    assert main(["fuse", str(tiny_run), str(a), str(b), "--lam", "0.5", "--t", "10", "--out", str(out),
                 "--device", "cpu", "--scale", "1"]) == 0
    assert Image.open(out).size == (IMAGE_SIZE, IMAGE_SIZE)
    strip = Image.open(tmp_path / "fused-strip.png")
    assert strip.size[0] == 3 * (IMAGE_SIZE + PADDING) + PADDING  # a, fused, b
    out = tmp_path / "strip.png"
    assert main(["fuse", str(tiny_run), str(a), str(b), "--method", "ddim-slerp", "--steps", "3",
                 "--lams", "0,0.25,0.5,0.75,1", "--out", str(out), "--device", "cpu", "--scale", "1"]) == 0
    assert Image.open(out).size[0] == 7 * (IMAGE_SIZE + PADDING) + PADDING
    out = tmp_path / "dpm.png"  # noise-mix decoded by DPM-Solver++ from --t
    assert main(["fuse", str(tiny_run), str(a), str(b), "--lam", "0.5", "--t", "10", "--sampler", "dpmpp-2m",
                 "--steps", "4", "--out", str(out), "--device", "cpu", "--scale", "1"]) == 0
    assert Image.open(out).size == (IMAGE_SIZE, IMAGE_SIZE)


def test_fuse_command_batch_of_pairs_is_scored(tiny_run, real_faces, scoring_flags, tmp_path):
    out = tmp_path / "fused"
    assert main(["fuse", str(tiny_run), "--pairs", "5", "--from", str(real_faces), "--out", str(out),
                 "--sampler", "ddim", "--steps", "2", "--t", "20", "--batch-size", "2", *scoring_flags]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["1.png", "2.png", "3.png", "4.png", "5.png", "pairs.png"]
    manifest = json.loads((out / "difflab-sample.json").read_text())
    assert manifest["previews"] == ["pairs.png"] and len(manifest["pairs"]) == 5
    scores = json.loads((out / "scores.json").read_text())["scores"]
    assert scores["num_images"] == 5  # the preview is not scored
    assert scores["distance"]["value"] is None and "too few" in scores["distance"]["reason"]  # 5 < 256 dims
    assert isinstance(scores["kid"]["value"], float)
    assert 0 <= scores["afd"]["value"] <= 1


# --- compare ------------------------------------------------------------------------------


def test_sampler_specs():
    specs = parse_sampler_specs("ddpm, ddim:10, ddim:10:eta=1, dpmpp-2m:10", TIMESTEPS)
    assert [(s.sampler, s.steps, s.eta) for s in specs] == [("ddpm", 50, 0), ("ddim", 10, 0), ("ddim", 10, 1),
                                                            ("dpmpp-2m", 10, 0)]
    assert [s.label for s in specs] == ["ddpm:50", "ddim:10", "ddim:10:eta=1", "dpmpp-2m:10"]
    for bad in ("ddpm:1000", "ddim:0", "ddim:100", "dpmpp-2m:100", "euler:10", "ddim:10,ddim:10", ""):
        with pytest.raises(ConfigError, match="samplers"):
            parse_sampler_specs(bad, TIMESTEPS)


def test_compare_writes_rows_in_order_with_honest_metrics(study):
    results = json.loads((study / "results.json").read_text())
    rows = results["rows"]
    assert [row["label"] for row in rows] == ["ddim:2", "ddim:4"]
    assert [row["network_evaluations"] for row in rows] == [2 * 8, 4 * 8]
    assert rows[0]["speedup"] == pytest.approx(1.0) and rows[1]["speedup"] > 0
    assert results["baseline"] == "ddim:2" and "warm-up" in results["timing"]
    for row in rows:
        assert row["metrics"]["distance"]["value"] is None and row["metrics"]["distance"]["reason"]
        assert isinstance(row["metrics"]["kid"]["value"], float)
        assert sorted(p.name for p in Path(row["folder"]).iterdir()) == sorted(f"{i}.png" for i in range(1, 9))
    markdown = (study / "results.md").read_text()
    assert "speed-up vs ddim:2" in markdown and "n/a [1]" in markdown and "[1] the generated set" in markdown
    assert markdown.index("| DDIM | 2 |") < markdown.index("| DDIM | 4 |")
    for name in ("quality_vs_time.png", "same_seeds.png"):
        Image.open(study / name).verify()


def test_rows_start_from_the_same_noise(study, loaded):
    """Every row is generate_images with the same seed: only the sampler differs."""
    for folder, steps in (("ddim-2", 2), ("ddim-4", 4)):
        _, expected = next(generate_images(loaded, 4, batch_size=4, sampler="ddim", steps=steps, seed=0))
        written = torch.from_numpy(np.array(Image.open(study / folder / "1.png"))).permute(2, 0, 1)
        assert torch.equal(written, expected[0])


def test_compare_refuses_to_overwrite(tiny_run, study):
    with pytest.raises(SystemExit):
        main(["compare", str(tiny_run), "--samplers", "ddim:2", "-n", "2", "--out", str(study)])


# --- report -------------------------------------------------------------------------------


class ReportParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self._in_h2 = tag == "h2"
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag in ("script", "link", "iframe"):
            raise AssertionError(f"a self-contained report has no <{tag}>")

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def test_report_has_every_section_with_embedded_images(tiny_run, study, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(tiny_run), "--study", str(study), "--out", str(out), "--steps", "3",
                 "--device", "cpu"]) == 0
    parser = ReportParser()
    parser.feed(out.read_text())
    assert parser.headings == ["Configuration", "Training loss", "Samples", "Progressive generation", "Fusion",
                               "DDPM versus DDIM", "Metrics"]
    # loss curve, sample grid, progress figure, two fusion strips, study plot, same-seed rows
    assert len(parser.images) == 7
    for source in parser.images:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(source[len(prefix):])))
        assert image.format == "PNG" and image.width > 0
    text = out.read_text()
    assert "speed-up vs ddim:2" in text and "n/a [1]" in text  # the study table, with its honest gaps
