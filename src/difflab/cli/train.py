"""`difflab train DATA --out RUN [options]`: every TrainConfig field is a flag."""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from difflab.config import TrainConfig, coerce_options, flag_name, load_config_file
from difflab.errors import ConfigError

# Options that may differ when resuming; everything else must match the run's saved config.
RESUMABLE = {"steps", "max_minutes", "save_every", "log_every", "keep_checkpoints", "workers", "compile", "cuda_graphs",
             "channels_last", "grid_images", "grid_sampler_steps", "data", "data_root"}
RUN_FILES = ("checkpoints", "samples", "metrics.jsonl", "loss.png", "config.json", "summary.json")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are suppressed so we can tell what was given."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name == "data":
            continue
        group = groups.setdefault(_section(f.name), parser.add_argument_group(_section(f.name)))
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS,
                  "help": f"{f.metadata['help']} (default: {f.default!r})"}
        if isinstance(f.default, bool):
            group.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(flag_name(f.name), type=type(f.default), metavar=f.name.upper(), **kwargs)


def _section(name: str) -> str:
    order = [("data", "data"), ("channels", "network"), ("timesteps", "diffusion"), ("batch_size", "optimisation"),
             ("compile", "speed"), ("out", "output")]
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    section = "data"
    for first, label in order:
        if names.index(name) >= names.index(first):
            section = label
    return section


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a DDPM on an image folder, zip or built-in dataset",
                                   description="Train a diffusion model. Every option may also come from --config.")
    parser.add_argument("data", nargs="?", default=argparse.SUPPRESS,
                        help="image folder, .zip archive, or built-in dataset: mnist, cifar10, shapes")
    parser.add_argument("--config", help="TOML or YAML file of options (command-line flags win)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an --out folder that already holds a run (deletes its checkpoints)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_options(parser)
    parser.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < config file < command line; with --resume, the run's saved config is the base."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values = coerce_options(load_config_file(args.config), str(args.config)) if args.config else {}
    values.update(given)
    if args.resume:
        out = Path(values.get("out", ""))
        saved_path = out / "config.json"
        if not saved_path.is_file():
            raise ConfigError(f"--resume: {out} holds no run (no config.json); start it without --resume")
        saved = json.loads(saved_path.read_text())
        for name, value in values.items():
            if name not in RESUMABLE and name in saved and saved[name] != value:
                raise ConfigError(f"{flag_name(name)} {value!r} differs from the run being resumed "
                                  f"({saved[name]!r}); only {', '.join(sorted(flag_name(n) for n in RESUMABLE))} may change")
        values = {**saved, **values}
    return TrainConfig.from_dict(values, source="command line").validate()


def check_out_folder(config: TrainConfig, resume: bool, overwrite: bool) -> None:
    out = Path(config.out)
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if resume or not existing:
        return
    if not overwrite:
        raise ConfigError(f"--out {out} already holds a run ({', '.join(existing)}); pass --resume to continue "
                          "it or --overwrite to start over")
    for name in existing:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def run(args: argparse.Namespace) -> int:
    from difflab.build import check_buildable
    from difflab.training import train

    config = resolve_config(args)
    check_buildable(config)
    check_out_folder(config, args.resume, args.overwrite)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    print(f"difflab: trained {result.step} steps ({result.stopped_by} limit reached); run folder: {result.run_dir}")
    print(f"  checkpoint: {result.checkpoint}")
    print(f"  samples:    {result.run_dir / 'samples'}   loss curve: {result.run_dir / 'loss.png'}")
    return 0
