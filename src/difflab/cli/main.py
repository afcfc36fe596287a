"""The `difflab` command: one sub-command per module in this package.

Each command module exposes `register(subparsers)`, which adds its parser and
sets `func` (called with the parsed namespace; returns an exit code).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings

from difflab import __version__
from difflab.errors import ConfigError, DataError

_DEFAULT_FORMAT_WARNING = warnings.formatwarning

# Order here is the order in `difflab --help`.
COMMAND_MODULES = [
    "difflab.cli.train",
    "difflab.cli.sample",
    "difflab.cli.demo",
    "difflab.cli.evaluate",
    "difflab.cli.progress", "difflab.cli.fuse", "difflab.cli.compare", "difflab.cli.ablate",
    "difflab.cli.report",
    "difflab.cli.export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="difflab",
        description="Train, sample and evaluate image diffusion models on a folder of your own images.",
    )
    parser.add_argument("--version", action="version", version=f"difflab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """difflab's own warnings (`difflab: ...`) as one plain line; others as usual."""
    text = str(message)
    if text.startswith("difflab:"):
        return text + "\n"
    return _DEFAULT_FORMAT_WARNING(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning  # printing only: recording (pytest, catch_warnings) is unaffected
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        # prints usage and exits with code 2, before any work; the option as this command spells it
        parser.error(error.render(flag_namer(parser, args.command)))
    except DataError as error:
        print(f"difflab: error: {error.render(flag_namer(parser, args.command))}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        print(f"difflab: error: {storage_error_message(error, args)}", file=sys.stderr)
        return 1
    except Exception as error:
        from difflab.training import NonFiniteLossError
        if not isinstance(error, NonFiniteLossError):
            raise
        print(f"difflab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130


def flag_namer(parser: argparse.ArgumentParser, command: str | None):
    """Map a library option name (an argparse `dest`, e.g. "image_size") to the flag that the
    command's parser spells it with ("--image-size", or a positional's metavar such as "REAL").
    A name no flag of the command has reads as `--name-with-dashes`."""
    spelled: dict[str, str] = {}
    actions = list(parser._actions)
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            actions += action.choices[command]._actions
    for action in actions:
        if action.option_strings:
            if action.help == argparse.SUPPRESS:  # hidden aliases spell no option
                continue
            long = [s for s in action.option_strings if s.startswith("--")]
            spelled.setdefault(action.dest, (long or action.option_strings)[0])
        elif action.dest not in (argparse.SUPPRESS, "command"):
            spelled.setdefault(action.dest, action.metavar if isinstance(action.metavar, str) else action.dest.upper())
    return lambda name: spelled.get(name, "--" + name.replace("_", "-"))


# Errors of the storage, not of difflab: full disk or quota, read-only file system, no permission,
# a file too large, an I/O error. They end a command with one line, not a traceback.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def storage_error_message(error: OSError, args: argparse.Namespace) -> str:
    """One line: what failed, where, and what was kept (for train, the last checkpoint)."""
    what = error.strerror or str(error)
    where = f" writing {error.filename}" if error.filename else ""
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota exceeded)",
            errno.EROFS: "choose a writable --out", errno.EACCES: "check the permissions or choose another --out",
            errno.EPERM: "check the permissions or choose another --out"}.get(error.errno, "check the disk")
    kept = ""
    if getattr(args, "command", None) == "train":
        kept = f"; kept: {_last_checkpoint(args)}"
        hint += ", then continue with --resume"
    return f"{what}{where}; {hint}{kept}"


def _last_checkpoint(args: argparse.Namespace) -> str:
    import warnings
    from pathlib import Path

    out = getattr(args, "out", None)
    if not out:
        return "the run folder's checkpoints (see --out)"
    from difflab.training.checkpoint import find_checkpoint
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return f"the last checkpoint, {find_checkpoint(Path(out) / 'checkpoints')}"
    except (DataError, OSError):
        return "no checkpoint had been written yet"


if __name__ == "__main__":
    sys.exit(main())
