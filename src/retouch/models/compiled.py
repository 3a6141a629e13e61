"""Opt-in compiled UNet: ``load_model(..., compile=True | "freeze")``, ``--compile [freeze]``.

The UNet is compiled by Inductor the first time each input shape meets it (a new size or batch compiles
again, once: shapes are not made dynamic, whose kernels are slower). Two modes:

* ``True`` (``"default"``): ``torch.compile`` of the UNet's forward; the compiled code takes the weights as
  inputs at every call. No memory beyond the code; a modest gain (fused elementwise work around the same
  matmul and convolution kernels).
* ``"freeze"``: AOTInductor with *freezing* (:mod:`retouch.models.frozen`): the loaded weights are folded into
  the compiled code and pre-packed for oneDNN — most of the gain, and a copy of the UNet's weights per
  compiled input shape (measured in docs/benchmarks.md): for a server that sees one or two image sizes. The
  compiled package is kept on disk and loaded by the next start in seconds.

Either way a job whose networks (LoRA …) are in the weights runs the eager UNet, as does a seamless-tiling job
(circular padding): their pictures are exactly those of an uncompiled model.

Inductor's caches (compiled kernels) go to ``<retouch cache>/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` names
another folder, so a restart does not build them again (the system's temporary folder, Inductor's default, is
emptied on reboot).

``torch.compile``'s code lives as long as the process and may hold a model that was let go. So when a compiled
model has been let go, the next compiled load (a checkpoint switch) first drops all compiled code
(:func:`forget_released`); UNets still in use compile again on their next call, from the disk cache. Frozen
packages go with their model.

What else a compiled UNet does differently: an interrupt lands between UNet calls instead of within one
convolution.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import weakref

import torch

from retouch.models.frozen import cache_budget, frozen_unet, package_dir
from retouch.models.paths import cache_dir

logger = logging.getLogger(__name__)

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
MODES = ("default", "freeze")
_released = threading.Event()  # a compiled UNet was let go since the last forget_released()


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
    forget_released()
    if mode == "freeze":
        cache_budget()  # a bad RETOUCH_FROZEN_CACHE_GB fails the load, not a job's compile later
    if mode == "default":
        unet.compile(dynamic=False)
        weakref.finalize(unet, _released.set)
    logger.info("the UNet compiles (%s) on its first call per input shape (cache: %s)", mode,
                package_dir() if mode == "freeze" else os.environ[CACHE_ENV])


def run_compiled(unet: torch.nn.Module, mode: str, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 class_labels: torch.Tensor | None, upcast: bool) -> torch.Tensor:
    """One call of the compiled UNet (``mode`` as given to :func:`compile_unet`): the predicted noise."""
    if mode == "freeze":
        return frozen_unet(unet)(x, t, context, class_labels, upcast)
    import torch._inductor.config as inductor_config

    extra = {"cross_attention_kwargs": {"upcast": True}} if upcast else {}
    with inductor_config.patch(freezing=False):  # read when a graph is traced (TORCHINDUCTOR_FREEZING aside)
        return unet(x, t, encoder_hidden_states=context, class_labels=class_labels, **extra).sample


def forget_released() -> bool:
    """If a compiled UNet was let go, drop all compiled code so that weights frozen into it are freed
    (``torch._dynamo.reset``); compiled UNets still in use compile again on their next call. Whether it did."""
    gc.collect()  # a model let go in a reference cycle
    if not _released.is_set():
        return False
    _released.clear()
    torch._dynamo.reset()
    gc.collect()  # the compiled code and its frozen weights are held in reference cycles
    logger.info("dropped the compiled code of a released model (and any weights frozen into it)")
    return True
