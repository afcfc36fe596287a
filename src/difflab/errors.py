"""Errors that carry a message meant for the user, not a traceback."""
from __future__ import annotations

import re
from typing import Callable

OPTION = "{option}"
"""The placeholder a ConfigError message uses for the option's name; `{option:other_name}` names
another option (for checks across two options)."""
_PLACEHOLDER = re.compile(r"\{option(?::([A-Za-z_][A-Za-z0-9_]*))?\}")


class _OptionMessage:
    """A message that may name an option through `{option}` placeholders (see ConfigError)."""

    message: str
    option: str | None

    def _set_message(self, message: str, option: str | None) -> str:
        self.message, self.option = message, option
        return self.render()

    def render(self, name_of: Callable[[str], str] | None = None) -> str:
        """The message with the option named by `name_of(option)` (default: the Python name)."""
        name_of = name_of or (lambda name: name)
        text = self.message
        if self.option is not None and OPTION not in text:
            text = f"{OPTION}: {text}"
        return _PLACEHOLDER.sub(lambda m: name_of(m.group(1) or self.option or "option"), text)


class ConfigError(_OptionMessage, ValueError):
    """A bad option or configuration value, raised before any work starts.

    Library code speaks of values, not flags: `option` names the option as the library knows it
    (the keyword argument or option field, e.g. `"image_size"`), and the message refers to it
    with the placeholder `{option}`:

        raise ConfigError("{option} must be positive; got -3", option="batch_size")
        raise ConfigError("{option} must be divisible by {option:grad_accum}", option="batch_size")

    `str(error)` reads "batch_size must be positive; got -3" in Python; the command line shows
    the flag its command uses instead ("--batch-size must be ..."), through `render`.
    """

    def __init__(self, message: str, option: str | None = None):
        super().__init__(self._set_message(message, option))


class DataError(_OptionMessage, RuntimeError):
    """A dataset that cannot be used (missing, empty, too few readable images).

    Its message may name an option the way a ConfigError's does (`{option}`, `option=`), e.g. the
    batch size that asks for more images than there are; without `option` it is plain text."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(self._set_message(message, option))
