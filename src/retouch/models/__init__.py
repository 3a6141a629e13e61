"""Everything that reads model files: checkpoints, configs, diffusers folders, VAEs.

The names below are imported on first use, so that the light modules of this package (``paths``: folders and
file listings) can be imported without torch and diffusers: the CLI checks its arguments before they load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retouch.models.checkpoint import CheckpointError
    from retouch.models.loader import cache_dir, load_model
    from retouch.models.model import Model, VaeInfo

__all__ = ["CheckpointError", "Model", "VaeInfo", "cache_dir", "load_model"]

_LAZY = {"CheckpointError": "retouch.models.checkpoint", "cache_dir": "retouch.models.loader",
         "load_model": "retouch.models.loader", "Model": "retouch.models.model", "VaeInfo": "retouch.models.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'retouch.models' has no attribute {name!r}")
