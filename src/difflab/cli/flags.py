"""One vocabulary on the command line: old spellings of renamed flags as hidden, deprecated aliases.

    add_alias(parser, "--subsets", "--kid-subsets")        # takes a value, as --kid-subsets does
    add_alias(parser, "--no-afd", "--afd", value="off")    # a switch that stands for `--afd off`

An alias is its own argparse option with the new flag's `dest` and `help=argparse.SUPPRESS`: `--help`
does not list it, error messages name the new flag (cli.main.flag_namer skips suppressed actions),
and using it prints one line to stderr saying what it is renamed. Old spellings of a value (`--afd
yes` for `--afd on`) are kept the same way by `renamed_values`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

_NO_VALUE = object()
RENAMED = "difflab: {old} is renamed {new}; the old name goes in the next release"


def deprecation(old: str, new: str) -> None:
    """Print the one line that says `old` is renamed `new`."""
    print(RENAMED.format(old=old, new=new), file=sys.stderr)


class _DeprecatedAlias(argparse.Action):
    """Stores what the new flag would store, after saying that the old name is renamed."""

    def __init__(self, option_strings, dest, new: str = "", stored: Any = _NO_VALUE, **kwargs):
        self.new, self.stored = new, stored
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        deprecation(option_string or self.option_strings[0], self.new)
        setattr(namespace, self.dest, values if self.stored is _NO_VALUE else self.stored)


def add_alias(parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: str,
              value: Any = _NO_VALUE) -> argparse.Action:
    """Add `old` as a hidden alias of the flag `new`, which `parser` must already have.

    Without `value`, `old` takes what `new` takes (the same type, choices and number of
    arguments; a switch stays a switch). With `value`, `old` is a switch that stores `value`
    in `new`'s dest, i.e. stands for `new value`."""
    target = parser._option_string_actions.get(new)
    if target is None:
        raise ValueError(f"add_alias: the parser has no {new} to alias {old} to")
    common = dict(dest=target.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, action=_DeprecatedAlias)
    if value is not _NO_VALUE:
        return parser.add_argument(old, nargs=0, stored=value, new=f"{new} {value}", **common)
    if target.nargs == 0:  # store_true, store_const ...: a switch
        return parser.add_argument(old, nargs=0, stored=target.const, new=new, **common)
    return parser.add_argument(old, nargs=target.nargs, type=target.type, choices=target.choices,
                               metavar=target.metavar, new=new, **common)


def renamed_values(flag: str, renamed: dict[str, str]) -> Callable[[str], str]:
    """An argparse `type` that accepts the old spellings of a flag's values (e.g. {"yes": "on"})
    for one release, saying so, and passes every other value on for `choices` to check."""

    def value(text: str) -> str:
        if text in renamed:
            deprecation(f"{flag} {text}", f"{flag} {renamed[text]}")
            return renamed[text]
        return text

    value.__name__ = flag.lstrip("-").replace("-", "_")  # argparse names the type in some errors
    return value
