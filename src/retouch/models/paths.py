"""Where retouch finds its bundled files and keeps its cache. A leaf: imports nothing of retouch."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def cache_dir() -> Path:
    """Where retouch keeps generated files (the tiny model, hash cache): ``$RETOUCH_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/retouch`` or ``~/.cache/retouch``."""
    env = os.environ.get("RETOUCH_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "retouch"


def bundled_path(*parts: str) -> Path:
    """A file or folder shipped inside the package (``retouch/configs/…``)."""
    return Path(str(resources.files("retouch.configs").joinpath(*parts)))
