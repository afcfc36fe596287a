"""The `difflab` command: one sub-command per module in this package.

Each command module exposes `register(subparsers)`, which adds its parser and
sets `func` (called with the parsed namespace; returns an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from difflab import __version__
from difflab.errors import ConfigError, DataError

# Order here is the order in `difflab --help`.
COMMAND_MODULES = [
    "difflab.cli.train",
    "difflab.cli.sample",
    "difflab.cli.demo",
    "difflab.cli.evaluate",
    "difflab.cli.progress", "difflab.cli.fuse", "difflab.cli.compare", "difflab.cli.report",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        parser.error(str(error))  # prints usage and exits with code 2, before any work
    except DataError as error:
        print(f"difflab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
