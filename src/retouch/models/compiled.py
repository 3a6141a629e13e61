"""Opt-in compiled UNet: ``load_model(..., compile=True | "freeze")``, ``--compile [freeze]``.

The UNet is compiled ahead of time by AOTInductor the first time each input shape meets it (a new size or
batch compiles again, once: shapes are not made dynamic, whose kernels are slower), into a package on disk that
the next start loads in seconds (:mod:`retouch.models.frozen`). Two modes:

* ``True`` (``"default"``): the compiled code takes the loaded model's own weights (attached, not copied),
  whatever they are at the call: a job's networks (LoRA …) swapped into the weights run compiled too. No
  memory beyond the code, one package per architecture and input shape whatever the checkpoint; a modest gain
  (fused elementwise work around the same matmul and convolution kernels).
* ``"freeze"``: with *freezing*: the loaded weights are folded into the compiled code and pre-packed for
  oneDNN — most of the gain, and a copy of the UNet's weights per compiled input shape (measured in
  docs/benchmarks.md): for a server that sees one or two image sizes. A job whose networks are in the weights
  runs the eager UNet: its pictures are exactly those of an uncompiled model.

Either way a seamless-tiling job (circular padding) runs the eager UNet. A compiled UNet's packages are held
with the module and go with it.

Inductor's own caches (compiled kernels, the C++ build) go to ``<retouch cache>/inductor`` unless
``TORCHINDUCTOR_CACHE_DIR`` names another folder (the system's temporary folder, Inductor's default, is emptied
on reboot).

What else a compiled UNet does differently: an interrupt lands between UNet calls instead of within one
convolution.
"""

from __future__ import annotations

import logging
import os

import torch

from retouch.models.frozen import cache_budget, package_dir, packaged_unet
from retouch.models.paths import cache_dir

logger = logging.getLogger(__name__)

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
MODES = ("default", "freeze")


def compile_mode(value: bool | str | None) -> str | None:
    """``load_model``'s ``compile`` argument → ``None`` (not compiled), ``"default"`` or ``"freeze"``."""
    if value is None or value is False or value == "off":
        return None
    if value is True:
        return "default"
    if value not in MODES:
        raise ValueError(f"compile must be True, False, 'default' or 'freeze', got {value!r}")
    return str(value)


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


def compile_unet(unet: torch.nn.Module, mode: str) -> None:
    """Make ``unet`` compile on its first call per input shape through :func:`run_compiled` (the module, its
    parameters and names stay as they are; ``unet.forward`` stays the eager code)."""
    os.environ[CACHE_ENV] = inductor_cache_dir()  # Inductor reads it at each compile: the process's setting
    cache_budget()  # a bad RETOUCH_FROZEN_CACHE_GB fails the load, not a job's compile later
    logger.info("the UNet compiles (%s) on its first call per input shape (packages: %s)", mode, package_dir())


def run_compiled(unet: torch.nn.Module, mode: str, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 class_labels: torch.Tensor | None, upcast: bool) -> torch.Tensor:
    """One call of the compiled UNet (``mode`` as given to :func:`compile_unet`): the predicted noise."""
    return packaged_unet(unet, mode == "freeze")(x, t, context, class_labels, upcast)
