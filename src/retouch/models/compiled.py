"""Opt-in ``torch.compile`` of the UNet: ``load_model(..., compile=True | "freeze")``, ``--compile [freeze]``.

The UNet's forward is compiled by Inductor the first time each input shape meets it (a new size or batch
compiles again, once: shapes are not made dynamic, whose kernels are slower). Two modes:

* ``True`` (``"default"``): the compiled code takes the weights as inputs at every call. No memory beyond the
  code; a modest gain (fused elementwise work around the same matmul and convolution kernels).
* ``"freeze"``: Inductor's *freezing* folds the loaded weights into the compiled code and pre-packs them for
  oneDNN — most of the gain, and a copy of the UNet's weights per compiled input shape (measured in
  docs/benchmarks.md): for a server that sees one or two image sizes.

Either way a job whose networks (LoRA …) are in the weights runs the eager UNet, as does a seamless-tiling job
(circular padding): their pictures are exactly those of an uncompiled model.

Inductor's caches (compiled kernels) go to ``<retouch cache>/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` names
another folder, so a restart does not build them again (the system's temporary folder, Inductor's default, is
emptied on reboot).

Compiled code lives as long as the process: a frozen model that is let go would keep its weights in memory. So
when a compiled model has been let go, the next compiled load (a checkpoint switch) first drops all compiled code
(:func:`forget_released`); UNets still in use compile again on their next call, from the disk cache.

What else a compiled UNet does differently: an interrupt lands between UNet calls instead of within one
convolution.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import weakref
from collections.abc import Iterator

import torch

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
    """Compile ``unet``'s forward in place (the module, its parameters and names stay as they are); its calls
    must run within :func:`compiled_call` with the same ``mode``."""
    os.environ[CACHE_ENV] = inductor_cache_dir()  # Inductor reads it at each compile: the process's setting
    forget_released()
    unet.compile(dynamic=False)
    weakref.finalize(unet, _released.set)
    logger.info("the UNet compiles (%s) on its first call per input shape (cache: %s)", mode, os.environ[CACHE_ENV])


@contextlib.contextmanager
def compiled_call(mode: str) -> Iterator[None]:
    """Around a compiled UNet's call. Freezing is read from Inductor's settings when a graph is traced (the first
    call of a shape), and ``torch.compile(options=...)`` does not reach that step: so it is set here, per call."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=mode == "freeze"):
        yield


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
