"""Upscaler model files → networks, through spandrel (the library A1111 1.10 uses; spandrel detects the
architecture from the weights: ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, SCUNet, …).

spandrel is installed without its dependencies (``pip install --no-deps spandrel==0.3.4 einops``, as the
Makefile does), because it names torchvision, which cannot be installed beside the CPU torch here. Only two
of its architectures use torchvision (LaMa and RestoreFormer, neither an upscaler); while spandrel is
imported, and only then, a stand-in module answers their imports, and using either says so.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from retouch.models.checkpoint import SAFETENSORS_SUFFIXES, CheckpointError, read_pickle, read_state_dict

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps spandrel==0.3.4 einops"
_TORCHVISION_PARTS = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


class _Unavailable:
    """What a torchvision name is while torchvision is missing: any use says so."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return _Unavailable(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._name} needs torchvision, which retouch does not install; this model "
                           "architecture (LaMa / RestoreFormer) is not an upscaler retouch supports")


@contextlib.contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    added = []
    for name in _TORCHVISION_PARTS:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__getattr__ = _Unavailable(name).__getattr__  # type: ignore[method-assign]
            sys.modules[name] = module
            added.append(name)
    try:
        yield
    finally:
        for name in added:  # nothing else may see a torchvision that is not there
            sys.modules.pop(name, None)


_import_lock = threading.Lock()


def spandrel() -> Any:
    """The spandrel module; ``RuntimeError`` with the install command when it is missing."""
    with _import_lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        try:
            with _torchvision_stand_in():
                return importlib.import_module("spandrel")
        except ImportError as e:
            raise RuntimeError(f"model upscalers need spandrel ({e}); install it with: {INSTALL_HINT}") from None


def read_weights(path: Path) -> dict[str, Any]:
    """The raw contents of an upscaler file (Real-ESRGAN nests its weights under ``params_ema``; spandrel
    unwraps that). Pickles are read with ``weights_only``: nothing in them runs."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        state = read_state_dict(path)
        return {k: state[k] for k in state}
    obj = read_pickle(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dictionary of tensors, found {type(obj).__name__}")
    return obj


def load_descriptor(path: Path, device: torch.device | None = None) -> Any:
    """A spandrel image model (``ImageModelDescriptor``) for ``path``, in eval mode, float32."""
    lib = spandrel()
    state = lib.canonicalize_state_dict(read_weights(path))
    try:
        descriptor = lib.ModelLoader(device=device or torch.device("cpu")).load_from_state_dict(state)
    except lib.UnsupportedModelError:
        raise CheckpointError(path, "not an upscaler model spandrel recognises") from None
    if not isinstance(descriptor, lib.ImageModelDescriptor):
        raise CheckpointError(path, f"a {descriptor.architecture.name} model is not a single-image upscaler")
    descriptor.model.eval()
    return descriptor


class ModelCache:
    """Loaded upscaler models, the ``size`` most recently used kept (A1111 keeps the last one per class)."""

    def __init__(self, size: int = 2):
        self._size = size
        self._models: OrderedDict[Path, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> Any:
        key = path.resolve()
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        descriptor = load_descriptor(key)
        logger.info("loaded upscaler %s (%s, x%d)", key.name, descriptor.architecture.name, descriptor.scale)
        with self._lock:
            self._models[key] = descriptor
            while len(self._models) > self._size:
                self._models.popitem(last=False)
        return descriptor
