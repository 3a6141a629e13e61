"""Opt-in ``torch.compile`` of the UNet (``load_model(..., compile=True)``, ``--compile``).

The UNet's forward is compiled by Inductor the first time each input shape meets it (a new size or batch
compiles again, once: shapes are not made dynamic, whose kernels are slower). The compiled code reads the
weights as inputs at every call — no freezing — so LoRA networks, which A1111 adds into the weights in
place, take effect in the compiled UNet as in the eager one, without recompiling.

Inductor's caches (compiled graphs, kernels) go to ``<retouch cache>/inductor`` unless
``TORCHINDUCTOR_CACHE_DIR`` names another folder, so a restart finds them instead of compiling again (the
system's temporary folder, Inductor's default, is emptied on reboot).

What a compiled UNet does differently: an interrupt lands between UNet calls instead of within one
convolution, and a seamless-tiling job (circular padding) runs the UNet uncompiled.
"""

from __future__ import annotations

import logging
import os

import torch

from retouch.models.paths import cache_dir

logger = logging.getLogger(__name__)

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def inductor_cache_dir() -> str:
    """Where Inductor keeps its caches: ``$TORCHINDUCTOR_CACHE_DIR`` if the user set it, else retouch's cache
    folder. (Importing diffusers already sets the variable to Inductor's default, the temporary folder: that
    value counts as unset.)"""
    chosen = os.environ.get(CACHE_ENV)
    if chosen and os.path.abspath(chosen) != os.path.abspath(_inductor_default()):
        return chosen
    return str(cache_dir() / "inductor")


def _inductor_default() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # moved in another torch: no default to recognise
        return ""
    return default_cache_dir()


def compile_unet(unet: torch.nn.Module) -> None:
    """Compile ``unet``'s forward in place (the module, its parameters and names stay as they are)."""
    os.environ[CACHE_ENV] = inductor_cache_dir()  # Inductor reads it at each compile: the process's setting
    unet.compile(dynamic=False)
    logger.info("the UNet compiles on its first call per input shape (cache: %s)", os.environ[CACHE_ENV])
