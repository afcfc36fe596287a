"""Where difflab keeps files it can rebuild or re-download (weights, feature statistics)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """`$DIFFLAB_CACHE_DIR/<kind>`, else `$XDG_CACHE_HOME/difflab/<kind>`, else `~/.cache/difflab/<kind>`.

    The folder is not created here: callers that only look for a cached file must not
    leave empty folders behind.
    """
    root = os.environ.get("DIFFLAB_CACHE_DIR")
    if root:
        return Path(root).expanduser() / kind
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg_cache).expanduser() / "difflab" / kind
