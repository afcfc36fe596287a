"""Errors that carry a message meant for the user, not a traceback."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad option or configuration value. The message names the option (as `--flag`)
    and the allowed values; raised before any work starts."""


class DataError(RuntimeError):
    """A dataset that cannot be used (missing, empty, too few readable images)."""
