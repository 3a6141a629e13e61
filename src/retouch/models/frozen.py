"""The compiled UNet as AOTInductor packages, one per input signature, kept on disk so that the next start loads
them instead of compiling again. Two kinds:

* **frozen** (``compile="freeze"``): Inductor's freezing folds the weights into the compiled code and pre-packs
  them for oneDNN. ``torch.compile``'s own caches cannot keep such code (pre-packed weights do not pickle), so a
  restart would compile everything again. The package (the compiled code and a copy of the frozen weights)
  belongs to one set of weights.
* **live** (``compile=True``): the package holds the compiled code only; the loaded model's own parameters are
  attached to it at run time (no copy), and attached again if the module's tensors are replaced. One package
  serves every checkpoint of the same architecture and layout. (``torch.compile`` itself spent most of a next
  start re-tracing the UNet's Python, which its caches do not keep: measured in docs/benchmarks.md.)

The UNet is exported (``torch.export``) for one input signature and compiled by AOTInductor into
``<retouch cache>/aoti/<key>.pt2``. A package's key covers everything the compiled code depends on: the weights
(frozen: their contents, hashed once per loaded model, about 1 s per GB; live: their names, dtypes, shapes and
strides), the UNet's configuration, the input shapes, dtypes and memory formats, the attention upcast, the
versions of torch, diffusers and retouch's model code, and the CPU (pre-packed layouts are ISA-specific). The
folder is kept under ``RETOUCH_FROZEN_CACHE_GB`` (default 20) by deleting the least recently used packages.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from retouch.models.paths import cache_dir

logger = logging.getLogger(__name__)

BUDGET_ENV = "RETOUCH_FROZEN_CACHE_GB"
FORMAT = 1  # bump when the package contents change meaning
# The weights go in a blob beside the compiled code, not into the shared library: a library's constants stay
# mapped (and resident) after they are copied into the pre-packed tensors, twice the memory.
CONFIG = {"freezing": True, "aot_inductor.package_constants_in_so": False,
          "aot_inductor.package_constants_on_disk_format": "binary_blob"}
# Live packages hold no weights at all: the model's parameters are attached at run time, and the compiled code
# reads nothing else derived from them. Inductor would compute some tensors from the weights ahead of time
# (constant folding: transposed linear weights) and write small ones (up to 8 values: a bias) into the code:
# both would keep the first checkpoint's values (folding at attach time instead cost a copy of the linear
# weights per input shape, 0.6 GB for the SD1.5-sized bf16 UNet). With neither, the code sees the attached
# tensors as they are, changes made in place included.
LIVE_CONFIG = {"freezing": False, "aot_inductor.package_constants_in_so": False,
               "aot_inductor.package_constants_on_disk_format": None,
               "aot_inductor.use_runtime_constant_folding": False, "joint_graph_constant_folding": False,
               "always_keep_tensor_constants": True}
_MODELS_SOURCE = Path(__file__).resolve().parent
_packaged: weakref.WeakKeyDictionary[torch.nn.Module, dict[bool, PackagedUNet]] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def package_dir() -> Path:
    return cache_dir() / "aoti"


def packaged_unet(unet: torch.nn.Module, freeze: bool) -> PackagedUNet:
    """The compiled code of ``unet``, frozen or live (made on first use; let go with the module)."""
    with _registry_lock:
        kinds = _packaged.setdefault(unet, {})
        found = kinds.get(freeze)
        if found is None:
            found = kinds[freeze] = PackagedUNet(unet, freeze)
        return found


class _Call(torch.nn.Module):
    """The UNet call that is exported: positional tensors in, the predicted noise out."""

    def __init__(self, unet: torch.nn.Module, upcast: bool):
        super().__init__()
        self.unet, self.upcast = unet, upcast

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"cross_attention_kwargs": {"upcast": True}} if self.upcast else {}
        return self.unet(x, t, encoder_hidden_states=context, class_labels=class_labels, return_dict=False,
                         **extra)[0]


class PackagedUNet:
    """One loaded UNet's AOTInductor packages, one per input signature. Holds the module weakly."""

    def __init__(self, unet: torch.nn.Module, freeze: bool):
        self._unet = weakref.ref(unet)
        self.freeze = freeze
        self._runners: dict[tuple, Any] = {}
        self._weights: str | None = None
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, class_labels: torch.Tensor | None,
                 upcast: bool) -> torch.Tensor:
        args = (x, t, context) if class_labels is None else (x, t, context, class_labels)
        signature = (upcast, *(_describe(a) for a in args))
        runner = self._runners.get(signature)
        if runner is None:
            with self._lock:
                runner = self._runners.get(signature) or self._load_or_eager(signature, args, upcast)
                self._runners[signature] = runner
        return runner(*args)

    def _load_or_eager(self, signature: tuple, args: tuple, upcast: bool) -> Any:
        """The package's runner; if compiling or loading it fails, the eager UNet for this signature (said once
        in the log: a compiler error must not cost the job)."""
        try:
            return self._load(signature, args, upcast)
        except Exception:  # noqa: BLE001 - any compiler failure; the eager UNet is always there
            logger.warning("the %s UNet could not be compiled for %s: this input shape runs eager", self.kind,
                           signature[1:], exc_info=True)

            def eager(*call_args: torch.Tensor) -> torch.Tensor:  # holds no reference to the module: see __init__
                unet = self._unet()
                assert unet is not None
                return _Call(unet, upcast)(*call_args)

            return eager

    @property
    def kind(self) -> str:
        return "frozen" if self.freeze else "live"

    @property
    def shapes(self) -> int:
        """How many input signatures have their compiled code (or eager fallback) loaded."""
        return len(self._runners)

    def _load(self, signature: tuple, args: tuple, upcast: bool) -> Any:
        unet = self._unet()
        assert unet is not None, "a PackagedUNet outlived its module"
        if self._weights is None:
            self._weights = weights_digest(unet) if self.freeze else weights_layout(unet)
        path = package_dir() / f"{package_key(unet, self._weights, signature, self.freeze)}.pt2"
        if path.is_file():
            os.utime(path)  # most recently used
        else:
            build_package(_Call(unet, upcast).eval(), args, path, CONFIG if self.freeze else LIVE_CONFIG)
            prune(package_dir(), keep=path)
        started = time.perf_counter()
        runner: Any = torch._inductor.aoti_load_package(str(path))
        if not self.freeze:
            live = LiveWeights(runner, self._unet)
            live.attach()
            runner = live
        logger.info("loaded the %s UNet for %s from %s in %.1f s", self.kind, signature[1:], path,
                    time.perf_counter() - started)
        return runner


class LiveWeights:
    """A live package's runner with the module's own parameters attached (no copy). The compiled code keeps
    their addresses: the tensors are held here, and if the module's are replaced (a new ``Parameter``, a
    ``.to()``, a job's networks swapped in), the new ones are attached before the next call."""

    def __init__(self, runner: Any, unet: weakref.ref[torch.nn.Module]):
        self._runner, self._unet = runner, unet
        self._names = list(runner.get_constant_fqns())
        self._attached: list[torch.Tensor] = []

    def _current(self) -> list[torch.Tensor]:
        unet = self._unet()
        assert unet is not None, "a live UNet package outlived its module"
        tensors = {**dict(unet.named_parameters(prefix="unet")), **dict(unet.named_buffers(prefix="unet"))}
        return [tensors[name] for name in self._names]  # a missing name fails the load: that shape runs eager

    def attach(self, tensors: list[torch.Tensor] | None = None) -> None:
        tensors = self._current() if tensors is None else tensors
        self._runner.load_constants({name: t.detach() for name, t in zip(self._names, tensors, strict=True)},
                                    check_full_update=True, user_managed=True)
        self._attached = tensors

    def __call__(self, *args: torch.Tensor) -> Any:
        current = self._current()
        if any(a is not b for a, b in zip(current, self._attached, strict=True)):
            self.attach(current)
        return self._runner(*args)


def build_package(call: torch.nn.Module, args: tuple, path: Path, config: dict) -> None:
    """Export ``call`` for ``args``' shapes and compile it (Inductor settings ``config``) into the package
    ``path``."""
    started = time.perf_counter()
    logger.info("compiling the UNet for %s (once: kept in %s)", [tuple(a.shape) for a in args], path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.partial.pt2")
    with torch.inference_mode(False), torch.no_grad():
        examples = tuple(a.clone() for a in args)  # not inference tensors: export traces with autograd off
        exported = torch.export.export(call, examples, strict=False)
        try:
            torch._inductor.aoti_compile_and_package(exported, package_path=str(partial),
                                                     inductor_configs=dict(config))  # it adds its own keys
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    del exported, examples
    gc.collect()  # the compiler's copies of the weights (freed memory goes back to the system after the job)
    logger.info("compiled the UNet in %.0f s (%.0f MB)", time.perf_counter() - started,
                path.stat().st_size / 2**20)


def _describe(tensor: torch.Tensor) -> tuple:
    channels_last = tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
    return tuple(tensor.shape), str(tensor.dtype), channels_last, tensor.is_contiguous()


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers: names, dtypes, shapes and contents."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            flat = tensor.detach().contiguous().reshape(-1)
            if flat.numel():
                digest.update(flat.view(torch.uint8).numpy().data)
    logger.debug("hashed the UNet's weights in %.1f s", time.perf_counter() - started)
    return digest.hexdigest()


def weights_layout(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters' and buffers' names, dtypes, shapes and strides (not their contents):
    what a live package's compiled code assumes of the tensors attached to it."""
    digest = hashlib.sha256()
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{tensor.stride()};".encode())
    return digest.hexdigest()


def package_key(unet: torch.nn.Module, weights: str, signature: tuple, freeze: bool = True) -> str:
    """The package's file name: ``weights`` is :func:`weights_digest` (frozen) or :func:`weights_layout` (live)."""
    import diffusers

    config = {k: v for k, v in dict(getattr(unet, "config", {})).items() if not k.startswith("_")}  # _: bookkeeping
    parts = {"format": FORMAT, "inductor": CONFIG if freeze else LIVE_CONFIG, "torch": torch.__version__, "diffusers": diffusers.__version__,
             "code": _code_digest(), "cpu": _cpu_identity(), "class": type(unet).__qualname__,
             "config": json.dumps(config, sort_keys=True, default=str), "weights": weights,
             "signature": repr(signature)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _code_digest() -> str:
    """retouch's model code (attention, padding …), which is part of the traced UNet."""
    digest = hashlib.sha256()
    for source in sorted(_MODELS_SOURCE.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()


def _cpu_identity() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
    return hashlib.sha256(("\n".join(wanted) + os.uname().machine).encode()).hexdigest()


def cache_budget() -> float:
    """Bytes the package folder may hold: ``$RETOUCH_FROZEN_CACHE_GB`` (default 20) GiB."""
    value = os.environ.get(BUDGET_ENV, "20")
    try:
        budget = float(value)
    except ValueError:
        budget = -1.0
    if not budget >= 0 or budget == float("inf"):
        raise ValueError(f"{BUDGET_ENV} must be a number of GiB (0 or more), got {value!r}")
    return budget * 2**30


def prune(folder: Path, keep: Path) -> None:
    """Delete the least recently used packages until the folder is within its budget (never ``keep``)."""
    budget = cache_budget()
    packages = sorted(folder.glob("*.pt2"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in packages)
    for package in packages:
        if total <= budget:
            break
        if package != keep and not package.name.endswith(".partial.pt2"):
            total -= package.stat().st_size
            package.unlink(missing_ok=True)
            logger.info("deleted the least recently used frozen UNet package %s (%s)", package.name, BUDGET_ENV)
