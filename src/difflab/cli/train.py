"""`difflab train DATA --out RUN [--model FAMILY] [options]`: every option of the run and of each model
family (difflab.families) is a flag."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import textwrap
from pathlib import Path

from difflab.config import Options, RunOptions, coerce_options, flag_name, is_auto, load_config_file
from difflab.errors import ConfigError, DataError

# Options that may differ when resuming; everything else must match the run's saved config.
RESUMABLE = {"steps", "max_minutes", "save_every", "log_every", "keep_checkpoints", "workers", "compile", "cuda_graphs",
             "compile_scope", "compile_cache", "channels_last", "cudnn_benchmark", "grid_images", "grid_sampler_steps",
             "data", "data_root"}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per option of the run and of every model family, in groups; defaults are
    suppressed so we can tell what was given (each family's dataclass supplies its own). An
    option that several families have (--lr) is one flag, listed under the first of them."""
    from difflab.families import FAMILIES, config_class, family_options

    seen: set[str] = set()
    sections = [(section, [f for f in dataclasses.fields(RunOptions) if _section(f.name) == section])
                for section in dict.fromkeys(_section(f.name) for f in dataclasses.fields(RunOptions))]
    for name in FAMILIES:
        owned = family_options(name)
        sections.append((f"--model {name}", [f for f in dataclasses.fields(config_class(name)) if f.name in owned]))
    for title, fields in sections:
        group = parser.add_argument_group(title)
        for f in fields:
            if f.name == "data" or f.name in seen:
                continue
            seen.add(f.name)
            kwargs = {"dest": f.name, "default": argparse.SUPPRESS,
                      "help": f"{f.metadata['help']} (default: {f.default!r})"}
            if f.name == "model":
                kwargs["choices"] = tuple(FAMILIES)
            if isinstance(f.default, bool):
                group.add_argument(flag_name(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            else:
                group.add_argument(flag_name(f.name), type=type(f.default), metavar=f.name.upper(), **kwargs)


def option_names() -> set[str]:
    """Every option of the run and of every family."""
    from difflab.families import FAMILIES, config_class
    return {f.name for name in FAMILIES for f in dataclasses.fields(config_class(name))}


def _section(name: str) -> str:
    """The --help group of a run option: the comment headings of RunOptions, by field order."""
    order = [("model", "model"), ("data", "data"), ("batch_size", "budget"), ("mixed_precision", "speed"),
             ("out", "output")]
    names = [f.name for f in dataclasses.fields(RunOptions)]
    section = "model"
    for first, label in order:
        if names.index(name) >= names.index(first):
            section = label
    return section


def _listing(title: str, entries: dict[str, str]) -> str:
    """A --help table: one line per name (wrapped only when the terminal is narrow)."""
    lines = [title]
    for name, text in entries.items():
        lines += textwrap.wrap(text, width=120, initial_indent=f"  {name:<18}", subsequent_indent=" " * 20)
    return "\n".join(lines)


def _epilog() -> str:
    from difflab.network.presets import PRESETS, describe_preset
    from difflab.recipes import RECIPE_HELP
    return "\n\n".join([
        _listing("network presets (--preset NAME, --model diffusion): the image size and U-Net; the flags you give "
                 "win", {name: describe_preset(name) for name in PRESETS}),
        _listing("recipes (--recipe NAME): measured option sets from difflab/recipes.py; a --preset and the flags "
                 "you give win", RECIPE_HELP)])


def register(subparsers: argparse._SubParsersAction) -> None:
    description = ("Train a model: a diffusion model (--model diffusion, the default), a StyleGAN2 baseline "
                   "(--model stylegan2) or the one-step denoiser of warm-started sampling (--model denoiser). Every option may also come from --config; options under another family's "
                   "heading are refused. The U-Net follows --image-size unless --dim-mults / --attn-resolutions "
                   "are given; --preset and --recipe (listed at the end) set many options at once. Precedence: "
                   "defaults < --recipe < --preset < --config file < flags.")
    parser = subparsers.add_parser("train", help="train a model (DDPM by default, or --model stylegan2) on an image "
                                   "folder, zip or built-in dataset",
                                   description=textwrap.fill(description, width=100), epilog=_epilog(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=argparse.SUPPRESS,
                        help="image folder, .zip archive, or built-in dataset: mnist, cifar10, shapes")
    parser.add_argument("--config", help="TOML or YAML file of options (command-line flags win; it may name a "
                        "preset and a recipe too)")
    parser.add_argument("--preset", metavar="NAME", help="a network preset (listed below): sets --image-size and the "
                        "U-Net options (--channels, --dim-mults, --attn-resolutions, ...); flags given win. With "
                        "--image-size, the preset's network at that size")
    parser.add_argument("--recipe", metavar="NAME", help="a measured recipe (listed below): mnist, mnist-gpu-minute, "
                        "demo, stylegan2-mnist, keras-lab; the options given win")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an --out folder that already holds a run (deletes its checkpoints)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_options(parser)
    parser.set_defaults(func=run)


# The options that name a set of other options: on the command line or as keys of a --config file.
MACROS = ("recipe", "preset")


def resolve_config(args: argparse.Namespace) -> Options:
    """Defaults < --recipe < --preset < config file < command line; with --resume, the run's saved
    config is the base."""
    from difflab.families import DEFAULT_FAMILY, config_class, make_config
    from difflab.recipes import recipe

    given = {name: getattr(args, name) for name in option_names() if hasattr(args, name)}
    file_values = dict(load_config_file(args.config)) if args.config else {}
    macros = {name: file_values.pop(name, None) for name in MACROS}
    macros.update({name: getattr(args, name) for name in MACROS if getattr(args, name, None) is not None})
    for name, value in macros.items():
        if isinstance(value, int) and not isinstance(value, bool):
            macros[name] = str(value)  # `preset = 128` in a file names the preset "128"
        elif value is not None and not isinstance(value, str):
            raise ConfigError(f"{{option}} must be a name; got {value!r}", option=name)
    recipe_values = recipe(macros["recipe"]) if macros["recipe"] else {}  # a bad name fails here, before any work
    family = str(given.get("model") or file_values.get("model") or recipe_values.get("model")
                 or _resumed_family(args, given) or DEFAULT_FAMILY)
    options = config_class(family)
    values = coerce_options(recipe_values, f"recipe {macros['recipe']!r}", options) if recipe_values else {}
    file_options = coerce_options(file_values, str(args.config), options) if args.config else {}
    if macros["preset"]:
        size = given.get("image_size", file_options.get("image_size"))  # the preset at an explicit size
        values.update(_preset_values(macros["preset"], family, size))
    values.update(file_options)
    values.update(given)
    if args.resume:
        out = Path(values.get("out", ""))
        saved = _saved_run_config(out)
        # The run is the folder --out names, however it is spelled and wherever it was moved or
        # copied to: the saved `out` only records where it was, and the current --out wins.
        # An `auto` option means the saved run's value (which is what auto resolved to then).
        values = {name: value for name, value in values.items() if not (is_auto(value) and name in saved)}
        for name, value in values.items():
            if name != "out" and name not in RESUMABLE and name in saved and saved[name] != value:
                raise ConfigError(f"{flag_name(name)} {value!r} differs from the run being resumed "
                                  f"({saved[name]!r}); only {', '.join(sorted(flag_name(n) for n in RESUMABLE))} may change")
        values = {**saved, **values}
    return make_config(values, source="command line").validate()


def _preset_values(name: str, family: str, image_size: int | None) -> dict:
    """The options a --preset sets (at `image_size` when one is given); ConfigError for a bad name,
    or for a family without U-Net presets."""
    from difflab.families import DEFAULT_FAMILY
    from difflab.network.presets import preset_options

    options = preset_options(name, image_size)  # a bad name fails here, naming the option
    if family != DEFAULT_FAMILY:
        raise ConfigError(f"{{option}} {name!r} sets a diffusion U-Net; it does not apply to {{option:model}} {family}",
                          option="preset")
    return options


def _resumed_family(args: argparse.Namespace, given: dict) -> str | None:
    """With --resume, the family of the run being resumed (its saved config's --model)."""
    if not args.resume:
        return None
    try:
        return _saved_run_config(Path(given.get("out", ""))).get("model")
    except ConfigError:
        return None  # resolve_config reports the missing run


def check_out_folder(config: Options, resume: bool, overwrite: bool) -> None:
    """Refuse an --out that is a file, cannot be written, or is in use by another process; with
    --overwrite, delete only the files an earlier difflab run wrote there (foreign files stay)."""
    from difflab.training.run_lock import check_not_locked

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; give a folder for the run")
    _check_writable(out)
    if out.is_dir():
        check_not_locked(out)
    existing = _difflab_run_files(out)
    if resume or not existing:
        return
    if not overwrite:
        shown = sorted({path.relative_to(out).parts[0] for path in existing})
        raise ConfigError(f"--out {out} already holds a run ({', '.join(shown)}); pass --resume to continue "
                          "it or --overwrite to start over")
    removed = []
    for path in existing:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    for sub in ("checkpoints", "samples"):
        try:
            (out / sub).rmdir()  # only if now empty: a user's files keep their folder
        except OSError:
            pass
    kept = _foreign_files(out)
    names = [str(path.relative_to(out)) for path in removed]
    message = (f"difflab: --overwrite removed {len(removed)} file(s) of the earlier run in {out}: "
               f"{', '.join(names[:6])}{' ...' if len(names) > 6 else ''}")
    if kept:
        message += (f"; kept {len(kept)} file(s) difflab did not write: "
                    f"{', '.join(kept[:6])}{' ...' if len(kept) > 6 else ''}")
    print(message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from difflab.families import get_family
    from difflab.training import train

    config = resolve_config(args)
    get_family(config.model).check(config)  # the family's own option checks, before any work
    check_out_folder(config, args.resume, args.overwrite)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    print(f"difflab: trained {result.step} steps ({result.stopped_by} limit reached); run folder: {result.run_dir}")
    print(f"  checkpoint: {result.checkpoint}")
    print(f"  samples:    {result.run_dir / 'samples'}   loss curve: {result.run_dir / 'loss.png'}")
    if result.monitor:
        from difflab.training.monitor import describe_summary
        print(f"  quality:    {describe_summary(result.monitor)}   curve: {result.run_dir / 'quality.png'}")
    return 0


# ---- run-folder helpers (the files difflab writes, and the checks before writing) ----------------

# What `difflab train` writes in a run folder, by sub-folder; atomic_write's temporaries of these
# (.<name>.<pid>.tmp) count too. Anything else in the folder is the user's and is never deleted.
_RUN_FILE_PATTERNS = {
    ".": re.compile(r"^(config\.json|summary\.json|metrics\.jsonl|loss\.png|quality\.png|quality\.jsonl)$"),
    "checkpoints": re.compile(r"^(ckpt-\d{8}\.safetensors|latest\.json)$"),
    "samples": re.compile(r"^step-\d{8}\.png$"),
}
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.\d+\.tmp$")


def _is_run_file(sub: str, name: str) -> bool:
    pattern = _RUN_FILE_PATTERNS[sub]
    temp = _TEMP_NAME.match(name)
    return bool(pattern.match(temp.group("name") if temp else name))


def _run_folder_files(out: Path):
    """(sub-folder, path) of every entry of `out`, checkpoints/ and samples/, leaving out those two
    sub-folders themselves and the run's lock."""
    for sub in _RUN_FILE_PATTERNS:
        folder = out if sub == "." else out / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if sub == "." and (path.name in ("checkpoints", "samples") or path.name.startswith(".difflab")):
                continue
            yield sub, path


def _difflab_run_files(out: Path) -> list[Path]:
    """The files of an earlier difflab run in `out`, recognised by name (see _RUN_FILE_PATTERNS)."""
    return [path for sub, path in _run_folder_files(out) if not path.is_dir() and _is_run_file(sub, path.name)]


def _foreign_files(out: Path) -> list[str]:
    """Files in `out`, checkpoints/ and samples/ that difflab did not write (relative names)."""
    return [str(path.relative_to(out)) for sub, path in _run_folder_files(out) if not _is_run_file(sub, path.name)]


def _check_writable(out: Path) -> None:
    """DataError when --out (or, if it does not exist yet, the folder it would be made in) cannot
    be written: a read-only file system or folder should fail before the data is read."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"--out {out}: {probe} is a file, not a folder")
    if not os.access(probe if str(probe) else ".", os.W_OK | os.X_OK):
        raise DataError(f"--out {out}: {probe} is not writable (read-only file system or no permission); "
                        "choose another --out")
    try:  # os.access ignores read-only mounts for some file systems, and root passes it: try for real
        if probe.is_dir():
            import tempfile
            with tempfile.TemporaryFile(dir=probe):
                pass
    except OSError as error:
        raise DataError(f"--out {out}: cannot write in {probe} ({error.strerror or error}); choose another --out") from None


def _saved_run_config(out: Path) -> dict:
    """The config.json of the run in `out`, for --resume; ConfigError/DataError when absent or corrupt."""
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise ConfigError(f"--resume: {out} holds no run (no config.json); start it without --resume")
    try:
        saved = json.loads(saved_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"--resume: {saved_path} is not readable JSON ({error}); the run's checkpoints hold its "
                        "configuration too: restore config.json, or start over with --overwrite") from None
    if not isinstance(saved, dict):
        raise DataError(f"--resume: {saved_path} holds a JSON {type(saved).__name__}, not a configuration")
    return saved
