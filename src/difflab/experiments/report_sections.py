"""The sections of `difflab report`: read from the run's files, or made on the spot (quickly,
with DDIM) where the user passed no figure. A section with nothing to show says how to
produce it instead of being left out."""
from __future__ import annotations

import html
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from difflab.errors import ConfigError, DataError
from difflab.experiments.fusion import FusionSettings
from difflab.experiments.fusion_outputs import fuse_strip
from difflab.experiments.progress import evenly_spaced_frames, progress_figure, record_progress
from difflab.experiments.report import Section, bullet_list, collapsed, command, figure, paragraph, table
from difflab.experiments.study_results import RESULTS_JSON, read_results, results_table, setup_lines
from difflab.generation import LoadedModel, generate_images
from difflab.generation.generate import batch_generator
from difflab.training.metrics_log import MetricsLog, plot_loss_curve
from difflab.viz.figures import auto_scale

FUSION_LAMS = [0.0, 0.25, 0.5, 0.75, 1.0]
KEY_OPTIONS = ("data", "image_size", "channels", "dim_mults", "attn_resolutions", "timesteps", "beta_schedule",
               "objective", "batch_size", "lr", "steps", "ema_decay")
PROGRESS_SAMPLES, PROGRESS_FRAMES = 4, 8


def run_folder(path: str | Path) -> Path:
    """The run folder of RUN, which may also name a checkpoint inside its checkpoints/ folder."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def configuration_section(run_dir: Path, loaded: LoadedModel) -> Section:
    config_file = run_dir / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else asdict(loaded.config)
    parameters = sum(p.numel() for p in loaded.network.parameters())
    facts = [("checkpoint", loaded.checkpoint.name), ("training step", f"{loaded.step:,}"),
             ("network parameters", f"{parameters:,}"), ("image shape (C, H, W)", str(loaded.image_shape()))]
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if "train_seconds" in summary:
            facts.append(("training time", f"{summary['train_seconds'] / 60:.1f} min"))
        if "stopped_by" in summary:
            facts.append(("training stopped by", str(summary["stopped_by"])))
    facts += [(key, str(config[key])) for key in KEY_OPTIONS if key in config]
    options = [(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
               for key, value in sorted(config.items())]
    all_options = collapsed(f"all {len(options)} training options (config.json)", table(["option", "value"], options))
    return Section("Configuration", table(None, facts) + all_options)


def loss_section(run_dir: Path) -> Section:
    if (run_dir / "loss.png").is_file():
        return Section("Training loss", figure(run_dir / "loss.png", "training loss against step (loss.png)"))
    with tempfile.TemporaryDirectory() as folder:
        plotted = plot_loss_curve(MetricsLog(run_dir / "metrics.jsonl").read(), Path(folder) / "loss.png")
        if plotted is not None:
            return Section("Training loss", figure(plotted, "training loss against step (from metrics.jsonl)"))
    return Section("Training loss", paragraph("The run logged fewer than two losses, so there is no curve; "
                                              "train with a smaller --log-every.", "note"))


def samples_section(run_dir: Path) -> Section:
    grids = sorted((run_dir / "samples").glob("step-*.png"))
    if not grids:
        return Section("Samples", paragraph("The run saved no sample grid yet (samples/step-*.png).", "note"))
    return Section("Samples", figure(grids[-1], f"samples at the latest saved step ({grids[-1].name})"))


def progress_section(loaded: LoadedModel, given: Path | None, steps: int, seed: int) -> Section:
    if given is not None:
        return Section("Progressive generation", figure(given, f"progressive generation ({given.name})"))
    steps = min(steps, loaded.schedule.timesteps)
    frames = evenly_spaced_frames(steps, min(PROGRESS_FRAMES, steps + 1))
    generator = batch_generator(seed, 0, loaded.device)
    noise = torch.randn(PROGRESS_SAMPLES, *loaded.image_shape(), device=loaded.device, generator=generator)
    progress = record_progress(loaded, noise, frames, "ddim", steps, generator=generator)
    image = progress_figure(progress, show_x0=True, scale=auto_scale(loaded.config.image_size))
    caption = (f"DDIM, {steps} steps, seed {seed}: each sample's noisy state x_t (upper row) and the network's "
               "predicted x0 (lower row) at the labelled timesteps; the last column is the result.")
    how = (f"difflab progress RUN -n {PROGRESS_SAMPLES} --frames {len(frames) + 1} --sampler ddim --steps {steps} "
           "--show-x0 --out progress.png")
    return Section("Progressive generation", figure(image, caption, how))


def fusion_inputs(loaded: LoadedModel, seed: int) -> tuple[Tensor, Tensor, str]:
    """Two training images if the run's data can be read here, else two DDIM samples."""
    from difflab.data import load_dataset

    config = loaded.config
    channels, size, _ = loaded.image_shape()
    try:
        dataset = load_dataset(config.data, size, channels, root=config.data_root or None, max_images=2,
                               progress=False)
        pair = torch.stack([dataset[0], dataset[1]])
        origin = f"the first two training images of {config.data}"
    except (ConfigError, DataError, OSError, IndexError):
        _, pair = next(generate_images(loaded, 2, sampler="ddim", seed=seed))
        origin = "two DDIM samples (the training data is not readable here)"
    images = pair.to(loaded.device, torch.float32).div(127.5).sub(1.0)
    return images[:1], images[1:], origin


def fusion_section(loaded: LoadedModel, given: Path | None, steps: int, seed: int) -> Section:
    if given is not None:
        return Section("Fusion", figure(given, f"fusion strip ({given.name})"))
    image_a, image_b, origin = fusion_inputs(loaded, seed)
    scale = auto_scale(loaded.config.image_size)
    t = loaded.schedule.timesteps // 2
    homework = FusionSettings("noise-mix", t=t, sampler="ddim", steps=steps)
    slerp = FusionSettings("ddim-slerp", steps=steps)
    _, homework_strip = fuse_strip(loaded, image_a, image_b, FUSION_LAMS, homework, seed, scale)
    _, slerp_strip = fuse_strip(loaded, image_a, image_b, FUSION_LAMS, slerp, seed, scale)
    lams = ",".join(f"{lam:g}" for lam in FUSION_LAMS)
    body = paragraph(f"Inputs: {origin}. lam is the weight of b.")
    body += figure(homework_strip, f"The homework's method: both images noised to t={t} with shared noise, mixed, "
                                   f"then denoised from t with DDIM ({min(steps, t + 1)} steps).",
                   f"difflab fuse RUN a.png b.png --t {t} --sampler ddim --steps {steps} --lam {lams} --out strip.png")
    body += figure(slerp_strip, f"DDIM inversion ({steps} steps) of both images, slerp of the latents, DDIM decoding.",
                   f"difflab fuse RUN a.png b.png --method ddim-slerp --steps {steps} --lam {lams} --out strip.png")
    return Section("Fusion", body)


def study_section(study: Path | None) -> Section:
    title = "DDPM versus DDIM"
    if study is None or not (study / RESULTS_JSON).is_file():
        where = f"{study} holds no {RESULTS_JSON}. " if study is not None else ""
        return Section(title, paragraph(f"{where}No study was given. Run one and pass its folder with --study:", "note")
                       + command("difflab compare RUN --samplers ddpm:1000,ddim:100,ddim:50,ddim:20,ddim:10 "
                                 "-n 1000 --real ./faces --out study/\n"
                                 "difflab report RUN --study study/ --out report.html"))
    document = read_results(study)
    header, rows, notes = results_table(document)
    body = bullet_list(setup_lines(document)) + table(header, rows) + "".join(paragraph(note, "note") for note in notes)
    for name, caption in (("quality_vs_time.png", "quality against sampling time"),
                          ("same_seeds.png", "the first samples of each setting, from the same starting noise")):
        if (study / name).is_file():
            body += figure(study / name, caption)
    return Section(title, body)


def metrics_section(metrics: Path | None, study: Path | None) -> Section:
    from difflab.metrics.report import format_table

    if metrics is not None:
        results = json.loads(metrics.read_text())
        return Section("Metrics", paragraph(f"From {metrics.name} (difflab eval --json):")
                       + f"<pre>{html.escape(format_table(results))}</pre>")
    hint = ("The study table above gives FD/FID, KID and the AFD rate for each sampler setting. "
            if study is not None and (study / RESULTS_JSON).is_file() else "")
    return Section("Metrics", paragraph(f"{hint}For the metrics of one set of samples, run the evaluation and pass "
                                        "its JSON with --metrics:", "note")
                   + command("difflab sample RUN -n 1000 --out samples/\n"
                             "difflab eval samples/ ./faces --json metrics.json\n"
                             "difflab report RUN --metrics metrics.json --out report.html"))
