"""Upscalers as A1111 lists and runs them: Lanczos, Nearest and model upscalers read by spandrel.

:func:`find_upscalers` lists them in A1111's order from :class:`UpscalerFolders` (``--esrgan-models-path``
and friends); :class:`Upscalers` runs one on an image (``Upscaler.upscale``: up to three model passes, then
Lanczos to the exact size, tiled by the ``ESRGAN_tile``-family options).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from retouch.upscalers.catalogue import (
    Kind,
    UpscalerFolders,
    UpscalerInfo,
    check_available,
    find_upscaler,
    find_upscalers,
)

if TYPE_CHECKING:
    from retouch.upscalers.run import Upscalers

__all__ = ["Kind", "UpscalerFolders", "UpscalerInfo", "Upscalers", "check_available", "find_upscaler",
           "find_upscalers"]


def __getattr__(name: str):
    if name == "Upscalers":  # torch and spandrel on first use: the catalogue is light (the CLI checks names first)
        from retouch.upscalers.run import Upscalers

        return Upscalers
    raise AttributeError(f"module 'retouch.upscalers' has no attribute {name!r}")
