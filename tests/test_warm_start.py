"""Issue 15: warm-started sampling (a truncated reverse process) and the one-step denoiser family, on
real MNIST digits from ../shared/data/mnist, at small scale (budgets in steps, not time).

- the math: noising an estimate to t0 has the q(x_t0 | x0) marginal; the start at T-1 without a
  prior is plain sampling bit for bit; with a perfect prior (real images) and the closed-form
  optimal denoiser of a real set, the FD falls as t0 falls; K passes are the K-fold composition of
  one pass, and a denoiser that returns the mean image has the closed-form distances;
- the denoiser family trains, resumes exactly and samples (CLI);
- `ablate-warm-start` writes its table end to end through the CLI;
- bad options fail before any work, naming the option.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from difflab.cli.main import main
from difflab.config import TrainConfig
from difflab.data import load_dataset
from difflab.diffusion import DiffusionSchedule, make_beta_schedule
from difflab.experiments.mean_image import pass_distances
from difflab.experiments.scoring import Scorer, ScoringOptions
from difflab.families import load_generator, make_config
from difflab.families.denoiser import denoiser_pass, passes_from
from difflab.generation import LoadedModel, generate_images
from difflab.generation.warm_start import Prior, WarmStarted, noise_to, prior_estimate
from difflab.training import train
from difflab.training.checkpoint import load_checkpoint

TIMESTEPS = 50
MNIST_ARGS = ["--data-root", None, "--image-size", "28", "--image-channels", "1", "--max-images", "128",
              "--no-hflip", "--workers", "0", "--no-progress"]
DIFFUSION_ARGS = ["--channels", "8", "--dim-mults", "1,2", "--res-blocks", "1", "--attn-resolutions", "",
                  "--timesteps", str(TIMESTEPS), "--batch-size", "16", "--steps", "6", "--save-every", "6",
                  "--grid-images", "4", "--grid-sampler-steps", "2"]
DENOISER_ARGS = ["--model", "denoiser", "--channels", "8", "--dim-mults", "1,2", "--batch-size", "16",
                 "--steps", "6", "--save-every", "3", "--log-every", "1", "--grid-images", "4",
                 "--keep-checkpoints", "10"]


@pytest.fixture(scope="module")
def mnist_root(shared_data) -> Path:
    return shared_data / "mnist"


def mnist_args(root: Path, *extra: str) -> list[str]:
    args = list(MNIST_ARGS)
    args[1] = str(root)
    return args + list(extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_root) -> dict[str, Path]:
    """A tiny diffusion run and a tiny denoiser run on real MNIST digits, 6 steps each."""
    folder = tmp_path_factory.mktemp("warm")
    diffusion, denoiser = folder / "diffusion", folder / "dip"
    assert main(["train", "mnist", "--out", str(diffusion), *mnist_args(mnist_root, *DIFFUSION_ARGS)]) == 0
    assert main(["train", "mnist", "--out", str(denoiser), *mnist_args(mnist_root, *DENOISER_ARGS)]) == 0
    return {"diffusion": diffusion, "denoiser": denoiser, "folder": folder}


@pytest.fixture(scope="module")
def real_digits(tmp_path_factory, mnist_root) -> Path:
    """400 real MNIST test digits as PNG files (written from the shared IDX file, never into the repo)."""
    folder = tmp_path_factory.mktemp("digits")
    digits = load_dataset("mnist", image_size=28, channels=1, root=mnist_root, split="test", max_images=400,
                          progress=False)
    for i in range(len(digits)):
        Image.fromarray(digits[i][0].numpy()).save(folder / f"{i:04d}.png")
    return folder


# ---- the math ----------------------------------------------------------------------------------------

def test_noising_an_estimate_has_the_q_marginal(mnist_root):
    """x_t0 = q_sample(estimate, t0, noise) over many noise draws: mean sqrt(a_t0) x0, variance 1 - a_t0."""
    schedule = DiffusionSchedule(make_beta_schedule("cosine", 1000))
    digit = load_dataset("mnist", image_size=28, channels=1, root=mnist_root, max_images=1, progress=False)[0]
    estimate = (digit.float() / 127.5 - 1).unsqueeze(0).expand(20000, -1, -1, -1)
    generator = torch.Generator().manual_seed(0)
    for start_t in (100, 600):
        x = noise_to(schedule, estimate, start_t, torch.randn(estimate.shape, generator=generator))
        alpha_bar = schedule.float64["alpha_bar"][start_t].item()
        n = estimate.shape[0]
        mean_error = (x.mean(0) - alpha_bar**0.5 * estimate[0]).abs().max().item()
        assert mean_error < 5 * ((1 - alpha_bar) / n) ** 0.5  # 5 standard errors, over 784 pixels
        variance = x.var(0)
        assert (variance.mean().item() - (1 - alpha_bar)) < 0.01 * (1 - alpha_bar)
        assert (variance - (1 - alpha_bar)).abs().max().item() < 6 * (2 / n) ** 0.5 * (1 - alpha_bar)


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 5), ("dpmpp-2m", 4)])
def test_start_at_t_minus_1_without_a_prior_is_plain_sampling_bit_for_bit(runs, sampler, steps):
    loaded = load_generator(runs["diffusion"], device="cpu")
    plain = torch.cat([images for _, images in generate_images(loaded, 6, 4, sampler, steps, seed=3)])
    warm = WarmStarted(loaded, None, TIMESTEPS - 1)
    started = torch.cat([images for _, images in warm.generate(6, 4, 3, sampler=sampler, steps=steps)])
    assert torch.equal(plain, started)
    # ... and a start below T-1 from the same noise is not (the check has something to tell apart)
    other = WarmStarted(loaded, Prior("folder", "zeros", images=[torch.zeros(1, 28, 28, dtype=torch.uint8)]), 20)
    assert not torch.equal(plain, torch.cat([im for _, im in other.generate(6, 4, 3, sampler=sampler, steps=steps)]))


class GaussianDenoiser(nn.Module):
    """The optimal denoiser of data distributed N(mu, Sigma) (mu, Sigma fitted to real digits), in closed
    form: E[x0 | x_t] = mu + sqrt(a) Sigma (a Sigma + (1 - a) I)^-1 (x_t - sqrt(a) mu), computed in the
    eigenbasis of Sigma; it predicts x0 (objective pred_x0). From pure noise it draws Gaussian blobs,
    not digits, so starting from real digits near t = 0 must score better."""

    def __init__(self, images: torch.Tensor, schedule: DiffusionSchedule):
        super().__init__()
        flat = images.flatten(1).double()
        self.register_buffer("mu", flat.mean(0))
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(flat.T))
        self.register_buffer("eigenvalues", eigenvalues.clamp(min=0))
        self.register_buffer("eigenvectors", eigenvectors)
        self.schedule = schedule
        self.anchor = nn.Parameter(torch.zeros(()))  # the generator's device comes from a parameter

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        t = (time * self.schedule.timesteps / 1000).round().long()
        a = self.schedule.float64["alpha_bar"][t].reshape(-1, 1)
        centred = (x.flatten(1).double() - a.sqrt() * self.mu) @ self.eigenvectors
        gain = a.sqrt() * self.eigenvalues / (a * self.eigenvalues + 1 - a)
        return (self.mu + (gain * centred) @ self.eigenvectors.T).float().reshape(x.shape)


def test_with_a_perfect_prior_the_fd_falls_as_t0_falls(mnist_root, real_digits, tmp_path, shared_eval):
    """The prior is the real test digits themselves, the model the closed-form optimal denoiser of a
    Gaussian fitted to 1,000 training digits."""
    timesteps = 100
    schedule = DiffusionSchedule(make_beta_schedule("cosine", timesteps))
    train_digits = load_dataset("mnist", image_size=28, channels=1, root=mnist_root, max_images=1000, progress=False)
    images = torch.stack([train_digits[i] for i in range(len(train_digits))]).float() / 127.5 - 1
    config = TrainConfig(data="x", out="y", image_size=28, timesteps=timesteps, objective="pred_x0", clip="static")
    model = LoadedModel(GaussianDenoiser(images, schedule), schedule, config, 1, 0, Path("closed-form"))
    prior = Prior("folder", str(real_digits), images=load_dataset(str(real_digits), 28, 1, progress=False))
    scorer = Scorer(str(real_digits), ScoringOptions(features=f"{shared_eval / 'featnet.py'}:mnist", afd="off",
                                                     progress=False))
    distances = {}
    for start_t in (timesteps - 1, 60, 30, 10):
        folder = tmp_path / f"t{start_t}"
        folder.mkdir()
        for first, batch in WarmStarted(model, prior, start_t).generate(300, 100, seed=0, sampler="ddim", steps=8):
            for i, image in enumerate(batch):
                Image.fromarray(image[0].numpy()).save(folder / f"{first + i}.png")
        distances[start_t] = scorer.score(str(folder))["distance"]["value"]
    assert distances[timesteps - 1] > distances[60] > distances[30] > distances[10], distances


def test_k_passes_are_the_k_fold_composition_of_one_pass(runs):
    denoiser = load_generator(runs["denoiser"], device="cpu")
    noise = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(passes_from(denoiser.network, noise, 0), noise)
        once = denoiser_pass(denoiser.network, noise)
        assert torch.equal(passes_from(denoiser.network, noise, 2), denoiser_pass(denoiser.network, once))
        assert once.abs().max() <= 1


class MeanDenoiser(nn.Module):
    """A denoiser that has learnt only the dataset's mean: D(x) = m for every x."""

    def __init__(self, mean: torch.Tensor):
        super().__init__()
        self.mean = nn.Parameter(mean)

    def forward(self, x, t):
        return self.mean.expand_as(x)


def test_the_mean_image_distances_of_a_mean_denoiser_are_the_closed_forms(mnist_root):
    digits = load_dataset("mnist", image_size=28, channels=1, root=mnist_root, max_images=200, progress=False)
    mean = torch.stack([digits[i] for i in range(len(digits))]).float().div(127.5).sub(1).mean(0)
    rows = {row["passes"]: row for row in pass_distances(MeanDenoiser(mean), mean, [0, 1, 2, 5], count=4000)}
    # K = 0 is noise: E||eps - m||^2 / d = 1 + mean(m^2); per-image RMS concentrates at its square root
    assert rows[0]["to_mean"] == pytest.approx((1 + mean.pow(2).mean().item()) ** 0.5, rel=0.01)
    assert rows[0]["spread"] == pytest.approx(1.0, rel=0.01)
    for k in (1, 2, 5):
        assert rows[k]["to_mean"] < 1e-6 and rows[k]["spread"] < 1e-6
    assert rows[2]["step"] < 1e-6 and rows[1]["step"] == pytest.approx(rows[0]["to_mean"], rel=1e-5)


# ---- the denoiser family -------------------------------------------------------------------------------

def denoiser_config(root: Path, out: Path, steps: int):
    return make_config({"model": "denoiser", "data": "mnist", "data_root": str(root), "image_size": 28,
                        "image_channels": "1", "max_images": 64, "hflip": False, "workers": 0, "channels": 8,
                        "dim_mults": "1,2", "batch_size": 8, "steps": steps, "save_every": 3, "log_every": 1,
                        "grid_images": 4, "keep_checkpoints": 10, "out": str(out)}).validate()


def test_the_denoiser_trains_resumes_exactly_and_samples(mnist_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(denoiser_config(mnist_root, straight, 6), progress=False)
    train(denoiser_config(mnist_root, resumed, 3), progress=False)
    train(denoiser_config(mnist_root, resumed, 6), resume=True, progress=False)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert a.meta["family"] == "denoiser" and a.step == 6
    for group in ("model", "ema"):
        for name, tensor in a.tensors[group].items():
            assert torch.equal(tensor, b.tensors[group][name]), f"{group}.{name} differs after resume"
    losses = [json.loads(line)["loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(loss == loss for loss in losses)
    assert (straight / "samples" / "step-00000006.png").is_file()
    out = tmp_path / "samples"
    assert main(["sample", str(straight), "-n", "5", "--batch-size", "2", "--passes", "3", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    manifest = json.loads((out / "difflab-sample.json").read_text())
    assert manifest["family"] == "denoiser" and manifest["sampler"] == "denoiser, 3 pass(es)"
    assert len(manifest["images"]) == 5
    generator = load_generator(straight, device="cpu")
    first = torch.cat([im for _, im in generator.generate(5, 2, seed=0, passes=3)])
    from difflab.viz.grid import to_uint8
    assert torch.equal(first[2:4], to_uint8(generator.estimate(2, 0, 2, 3)))  # a batch is seeded by its first index
    assert not torch.equal(first[:2], first[2:4])


def test_warm_start_through_sample_records_the_prior(runs, tmp_path):
    out = tmp_path / "s"
    assert main(["sample", str(runs["diffusion"]), "-n", "4", "--warm-start", str(runs["denoiser"]),
                 "--warm-passes", "2", "--start-t", "20", "--sampler", "ddpm", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    manifest = json.loads((out / "difflab-sample.json").read_text())
    assert manifest["warm_start"] == {"prior": str(runs["denoiser"]), "kind": "denoiser", "passes": 2, "start_t": 20}
    assert manifest["sampler"] == "denoiser x2 + DDPM-21 from t0 = 20"


def test_a_denoiser_prior_gives_its_k_pass_estimate(runs):
    denoiser = load_generator(runs["denoiser"], device="cpu")
    prior = Prior("denoiser", str(runs["denoiser"]), generator=denoiser)
    estimate = prior_estimate(prior, 3, seed=1, passes=2, first=4)
    assert torch.equal(estimate, denoiser.estimate(3, 1, 4, 2))
    assert not torch.equal(estimate, prior_estimate(prior, 3, seed=1, passes=1, first=4))


# ---- the ablation --------------------------------------------------------------------------------------

def test_the_ablation_table_end_to_end_on_mnist(runs, real_digits, shared_eval, tmp_path):
    out = tmp_path / "ablation"
    featnet = f"{shared_eval / 'featnet.py'}:mnist"
    code = main(["ablate-warm-start", str(runs["diffusion"]), "--prior", str(runs["denoiser"]), "--passes", "0,1",
                 "--start-t", "10,30", "--sampler", "ddpm", "-n", "12", "--batch-size", "6", "--real",
                 str(real_digits), "--features", featnet, "--digits", featnet, "--afd", "off", "--kid-subset-size",
                 "6", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    document = json.loads((out / "results.json").read_text())
    rows = {row["label"]: row for row in document["rows"]}
    warm = [row for row in document["rows"] if row["kind"] == "warm"]
    assert [(row["passes"], row["start_t"], row["sampler_steps"]) for row in warm] == \
        [(0, 10, 11), (1, 10, 11), (0, 30, 31), (1, 30, 31)]
    assert [row["prior_evaluations"] for row in warm] == [0, 1, 0, 1]
    plain = sorted(label for label, row in rows.items() if row["kind"] == "plain")
    assert plain == sorted(f"{name}-{n} from noise" for name in ("DDPM", "DDIM", "DPM-Solver++(2M)") for n in (11, 31))
    assert rows["denoiser x1 alone"]["kind"] == "prior"
    for row in document["rows"]:
        assert row["seconds"] > 0 and row["metrics"]["kid"]["value"] is not None
        assert 0 <= row["digits"]["rate"] <= 1 and row["digits"]["num_images"] == 12
    table = (out / "results.md").read_text()
    assert "denoiser x1 + DDPM-31 from t0=30" in table and "confident digits" in table
    assert (out / "quality_vs_time.png").stat().st_size > 0


def test_plain_adds_the_named_baselines_at_their_own_steps(runs, real_digits, tmp_path):
    out = tmp_path / "ablation"
    code = main(["ablate-warm-start", str(runs["diffusion"]), "--prior", str(real_digits), "--start-t", "10",
                 "--sampler", "ddim", "--steps", "3", "--plain", "ddim:7,dpmpp-2m:5,ddim:3", "-n", "4",
                 "--batch-size", "4", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    plain = [(row["sampler"], row["sampler_steps"]) for row in rows if row["kind"] == "plain"]
    # the NFE-matched baselines first; ddim:3 is one of them already, so it is not repeated
    assert plain == [("ddpm", 3), ("ddim", 3), ("dpmpp-2m", 3), ("ddim", 7), ("dpmpp-2m", 5)]


def test_a_stopped_ablation_keeps_its_cheapest_rows_in_table_order(runs, real_digits, tmp_path, monkeypatch):
    import difflab.experiments.study as study
    real_generate_row, calls = study.generate_row, []

    def generate_then_stop(generator, spec, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a time limit does to the command
        calls.append(spec.steps)
        return real_generate_row(generator, spec, *args, **kwargs)

    monkeypatch.setattr(study, "generate_row", generate_then_stop)
    out = tmp_path / "ablation"
    code = main(["ablate-warm-start", str(runs["diffusion"]), "--prior", str(real_digits), "--start-t", "30,10",
                 "--sampler", "ddim", "--no-baselines", "--plain", "ddim:40,ddim:2", "-n", "4", "--batch-size", "4",
                 "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 130  # "difflab: interrupted"
    assert calls == [2, 11, 31]  # cheapest first
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(row["kind"], row["sampler_steps"]) for row in rows] == [("warm", 31), ("warm", 11), ("plain", 2)]


@pytest.mark.parametrize("plain,message", [("ddim", "--plain must be SAMPLER:STEPS pairs"),
                                           ("ddim:0", "--plain must be SAMPLER:STEPS pairs"),
                                           ("nosuch:5", "--plain: 'nosuch' is no sampler"),
                                           ("ddim:5000", "--plain ddim:5000 has more steps than the model's 50")])
def test_bad_plain_rows_fail_before_any_work(runs, real_digits, tmp_path, capsys, plain, message):
    out = tmp_path / "ablation"
    with pytest.raises(SystemExit) as error:
        main(["ablate-warm-start", str(runs["diffusion"]), "--prior", str(real_digits), "--start-t", "10",
              "--plain", plain, "--out", str(out), "--no-progress", "--device", "cpu"])
    assert error.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert not out.exists()


# ---- bad options fail before any work ------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_size_denoiser(runs, mnist_root) -> Path:
    out = runs["folder"] / "dip16"
    args = mnist_args(mnist_root, *DENOISER_ARGS)
    args[args.index("--image-size") + 1] = "16"
    args[args.index("--steps") + 1] = "1"
    assert main(["train", "mnist", "--out", str(out), *args]) == 0
    return out


@pytest.mark.parametrize("options,message", [
    (["--start-t", "50"], "--start-t must be between 0 and 49"),
    (["--start-t", "-1", "--warm-start", "DIP"], "--start-t must be between 0 and 49"),
    (["--start-t", "20"], "--start-t below 49 needs --warm-start"),
    (["--warm-start", "DIP"], "--warm-start needs --start-t"),
    (["--warm-start", "DIFFUSION", "--start-t", "20"], "--warm-start must be a denoiser run, a GAN run or an image "
                                                       "folder; .* is a diffusion run"),
    (["--warm-start", "DIP16", "--start-t", "20"], "--warm-start: .* makes images of 16x16 px, 1 channel; the "
                                                   "diffusion model's are 28x28 px, 1 channel"),
    (["--warm-passes", "2"], "--warm-passes counts denoiser passes; it needs --warm-start to be a denoiser run"),
    (["--warm-passes", "2", "--warm-start", "REAL", "--start-t", "20"], "--warm-passes counts denoiser passes"),
    (["--warm-passes", "-1", "--warm-start", "DIP", "--start-t", "20"], "--warm-passes must be a whole number >= 0"),
    (["--warm-start", "NOWHERE", "--start-t", "20"], "--warm-start: no such run or image folder"),
])
def test_bad_warm_start_options_fail_before_any_work(runs, other_size_denoiser, real_digits, tmp_path, capsys,
                                                     options, message):
    names = {"DIP": runs["denoiser"], "DIP16": other_size_denoiser, "DIFFUSION": runs["diffusion"],
             "REAL": real_digits, "NOWHERE": tmp_path / "nowhere"}
    options = [str(names.get(option, option)) for option in options]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as error:
        main(["sample", str(runs["diffusion"]), "-n", "2", "--out", str(out), "--no-progress", "--device", "cpu",
              *options])
    assert error.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # nothing was written


@pytest.mark.parametrize("options,message", [
    (["--start-t", "10,60"], "--start-t must be between 0 and 49"),
    (["--passes", "1,x"], "--passes must be comma-separated whole numbers"),
    (["--prior", "REAL", "--passes", "1"], "--passes counts denoiser passes"),
    (["--prior", "DIFFUSION"], "--prior must be a denoiser run, a GAN run or an image folder"),
])
def test_bad_ablation_options_fail_before_any_work(runs, real_digits, tmp_path, capsys, options, message):
    names = {"REAL": real_digits, "DIFFUSION": runs["diffusion"]}
    options = [str(names.get(option, option)) for option in options]
    if "--prior" not in options:
        options += ["--prior", str(runs["denoiser"])]
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["ablate-warm-start", str(runs["diffusion"]), "--out", str(out), "--no-progress", "--device", "cpu",
              *options])
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_gan_prior_gives_its_psi_1_sample_and_the_sampler_finishes_from_it(mnist_root, tmp_path):
    """ES-DDPM/TDPM's prior: a StyleGAN2 run (1 step, 16 px) before a 16-px diffusion run."""
    gan, diffusion = tmp_path / "gan", tmp_path / "diffusion"
    gan_options = ["--model", "stylegan2", "--channel-base", "256", "--channel-max", "32", "--z-dim", "16",
                   "--w-dim", "16", "--batch-size", "8", "--steps", "1", "--save-every", "1", "--grid-images", "0"]
    args = mnist_args(mnist_root, *gan_options)
    args[args.index("--image-size") + 1] = "16"
    assert main(["train", "mnist", "--out", str(gan), *args]) == 0
    args = mnist_args(mnist_root, *DIFFUSION_ARGS)
    args[args.index("--image-size") + 1] = "16"
    args[args.index("--steps") + 1] = "1"
    args[args.index("--save-every") + 1] = "1"
    assert main(["train", "mnist", "--out", str(diffusion), *args]) == 0
    loaded = load_generator(diffusion, device="cpu")
    from difflab.generation.warm_start import load_prior, with_warm_start
    prior = load_prior(gan, loaded.image_shape(), "cpu")
    assert prior.kind == "gan" and prior.network_passes(None) == 1
    estimate = prior_estimate(prior, 4, seed=2, first=8)
    assert estimate.shape == (4, 1, 16, 16) and estimate.min() >= -1 and estimate.max() <= 1
    assert torch.equal(estimate, prior_estimate(prior, 4, seed=2, first=8))
    assert not torch.equal(estimate, prior_estimate(prior, 4, seed=2, first=0))
    warm = with_warm_start(loaded, str(gan), 10)
    images = torch.cat([im for _, im in warm.generate(4, 2, seed=0, sampler="ddim", steps=3)])
    assert images.shape == (4, 1, 16, 16)
    assert warm.describe(sampler="ddim", steps=3) == "GAN + DDIM-3 from t0 = 10"
    with pytest.raises(Exception, match="warm_passes counts denoiser passes"):
        with_warm_start(loaded, str(gan), 10, passes=2)


def test_the_ablation_on_real_anime_faces_scores_afd_and_a_real_prior_keeps_the_faces(tmp_path, shared_data,
                                                                                      shared_eval):
    """The anime side of the ablation end to end (issue 15: FD, KID, AFD on the anime faces): a tiny
    64 px run on real faces, real faces as the prior (SDEdit) at t0 = 1, against plain rows from noise."""
    faces = load_dataset(str(shared_data / "anime-faces-96px-2k.zip"), image_size=64, progress=False, max_images=48)
    real = tmp_path / "faces"
    real.mkdir()
    for i in range(len(faces)):
        Image.fromarray(faces[i].permute(1, 2, 0).numpy()).save(real / f"{i:03d}.png")
    run = tmp_path / "anime"
    assert main(["train", str(real), "--out", str(run), "--image-size", "64", "--workers", "0", "--no-progress",
                 *DIFFUSION_ARGS[:-6], "--batch-size", "8", "--steps", "2", "--save-every", "2", "--grid-images", "4",
                 "--grid-sampler-steps", "2"]) == 0
    out = tmp_path / "ablation"
    cascade = shared_data / "lbpcascade_animeface.xml"
    code = main(["ablate-warm-start", str(run), "--prior", str(real), "--start-t", "1", "--sampler", "ddim",
                 "--steps", "1", "--plain", "ddim:2", "-n", "16", "--batch-size", "16", "--real", str(real),
                 "--features", f"{shared_eval / 'featnet.py'}:cifar10", "--detector-weights", str(cascade),
                 "--kid-subset-size", "16", "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    document = json.loads((out / "results.json").read_text())
    assert document["scoring"]["reference_afd_rate"] > 0.5  # the cascade finds the real faces
    rows = {row["kind"]: [] for row in document["rows"]}
    for row in document["rows"]:
        rows[row["kind"]].append((row["metrics"]["afd"]["value"], row["metrics"]["kid"]["value"]))
    (warm_afd, warm_kid), = rows["warm"]
    assert len(rows["plain"]) >= 2 and warm_afd >= 0.5  # the real prior's faces survive t0 = 1 ...
    assert all(warm_afd > afd and warm_kid < kid for afd, kid in rows["plain"])  # ... a 2-step model's noise has none
    assert "AFD rate" in (out / "results.md").read_text()
