"""Applying networks to a model's weights for a job, and taking them off again.

A1111 adds each network's delta into the layer's weight in place and keeps a CPU backup to restore
from. Here the original weight tensors are never written: the patched weights are new tensors,
swapped into the layers for the job and swapped out after it, so the model outside a job is
bit-identical to the loaded one. The patched tensors of the last network set are kept, so the next
job with the same networks swaps them in without computing anything. Their memory is that of the
patched layers (A1111 holds the same amount as backups).

Jobs on one model may run in several threads: a job waits while another job uses a different set
of networks (the weights are shared), jobs with the same set run together.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from retouch.networks.layers import Layer
from retouch.networks.loading import LoadedNetwork


@dataclass(frozen=True)
class ActiveNetwork:
    """A network as a prompt asks for it: ``<lora:name:te:unet:dyn>``."""

    network: LoadedNetwork
    te: float = 1.0
    unet: float = 1.0
    dyn: int | None = None

    @property
    def key(self) -> tuple:
        return (str(self.network.file.path), self.network.stamp, self.te, self.unet, self.dyn)


Weights = dict[torch.nn.Module, tuple[torch.nn.Parameter, torch.nn.Parameter | None]]


@dataclass
class PatchStats:
    """What the last computation of patched weights cost (for the benchmark and the logs)."""

    layers: int = 0
    seconds: float = 0.0
    bytes: int = 0


@dataclass
class NetworkPatcher:
    """The networks currently applied to one model's layers (see the module docstring)."""

    layers: dict[str, Layer]
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _active: tuple = ()  # key of the set swapped in now
    _users: int = 0
    _cached_key: tuple = ()
    _cached: Weights = field(default_factory=dict)
    _originals: Weights = field(default_factory=dict)
    stats: PatchStats = field(default_factory=PatchStats)

    @contextlib.contextmanager
    def applied(self, networks: Sequence[ActiveNetwork]) -> Iterator[None]:
        """Patch the weights with ``networks`` (in order) for the block; restore them after."""
        key = tuple(n.key for n in networks)
        with self._cond:
            while self._users and self._active != key:
                self._cond.wait()
            if self._active != key:
                self._switch(key, networks)
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0 and self._active:
                    self._swap(self._originals)
                    self._active = ()
                self._cond.notify_all()

    @property
    def active(self) -> bool:
        """Whether networks are in the weights now (a job with networks is running)."""
        return bool(self._active)

    @property
    def cached_bytes(self) -> int:
        """Memory held by the kept patched weights."""
        return sum(_bytes(w) + (_bytes(b) if b is not None else 0) for w, b in self._cached.values())

    def clear(self) -> None:
        """Drop the kept patched weights (they are recomputed when needed)."""
        with self._cond:
            if not self._users:
                self._cached_key, self._cached = (), {}

    def _switch(self, key: tuple, networks: Sequence[ActiveNetwork]) -> None:
        if self._active:
            self._swap(self._originals)
        self._active = ()
        if not key:
            return
        if key != self._cached_key:
            self._cached_key, self._cached = (), {}  # free the old set before computing the new one
            self._cached = _patched_weights(networks, self.stats)
            self._cached_key = key
        self._originals = {module: (module._parameters["weight"], module._parameters.get("bias"))  # type: ignore[misc]
                           for module in self._cached}
        self._swap(self._cached)
        self._active = key

    @staticmethod
    def _swap(weights: Weights) -> None:
        for module, (weight, bias) in weights.items():
            module._parameters["weight"] = weight
            if bias is not None or "bias" in module._parameters:
                module._parameters["bias"] = bias


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _patched_weights(networks: Sequence[ActiveNetwork], stats: PatchStats) -> Weights:
    """New weight (and bias) tensors for every layer a network touches: each network's delta added in turn,
    rounded to the layer's dtype after each (A1111 ``network_apply_weights``)."""
    start = time.perf_counter()
    running: dict[torch.nn.Module, list[torch.Tensor | None]] = {}
    with torch.no_grad():
        for active in networks:
            for key, module in active.network.modules.items():
                layer = active.network.layers[key]
                if layer.inert:
                    continue  # A1111 never runs an OpenCLIP out_proj on its own
                if layer.fused:
                    _add_fused(active, key, layer, running)
                else:
                    _add(layer.module, module.delta, active, module.is_text, running)
    patched: Weights = {}
    for target, (weight, bias) in running.items():
        assert weight is not None
        patched[target] = (torch.nn.Parameter(weight, requires_grad=False),
                           torch.nn.Parameter(bias, requires_grad=False) if bias is not None else None)
    stats.layers = len(patched)
    stats.bytes = sum(_bytes(w) + (_bytes(b) if b is not None else 0) for w, b in patched.values())
    stats.seconds = time.perf_counter() - start
    return patched


def _add(target: torch.nn.Module, delta_fn: Callable, active: ActiveNetwork, is_text: bool,
         running: dict[torch.nn.Module, list[torch.Tensor | None]]) -> None:
    if target not in running:
        original_weight, original_bias = target._parameters["weight"], target._parameters.get("bias")
        assert original_weight is not None
        running[target] = [original_weight.detach(), original_bias.detach() if original_bias is not None else None]
    weight, bias = running[target]
    assert weight is not None
    multiplier = active.te if is_text else active.unet
    delta, ex_bias = delta_fn(weight.to(torch.float32), multiplier, active.dyn)
    if delta.shape != weight.shape:  # a 4-channel conv delta on an inpainting / pix2pix input conv
        delta = torch.nn.functional.pad(delta, (0, 0, 0, 0, 0, weight.shape[1] - delta.shape[1]))
    new = torch.empty_like(weight)  # keeps the layer's memory format (channels-last)
    new.copy_(weight.to(torch.float32) + delta)
    running[target][0] = new
    if ex_bias is not None:
        running[target][1] = ex_bias.to(weight.dtype) if bias is None else (bias.to(torch.float32) + ex_bias).to(
            bias.dtype)


def _add_fused(active: ActiveNetwork, key: str, layer: Layer,
               running: dict[torch.nn.Module, list[torch.Tensor | None]]) -> None:
    """OpenCLIP attention: A1111 patches its fused q/k/v (and out) only when the network has all four."""
    if not key.endswith("_q_proj"):
        return  # handled with its q_proj
    base = key[: -len("q_proj")]
    parts = [active.network.modules.get(base + p) for p in ("q_proj", "k_proj", "v_proj", "out_proj")]
    if any(p is None for p in parts):
        return
    for target, module in zip(layer.modules, parts, strict=True):
        assert module is not None
        _add(target, module.delta, active, module.is_text, running)
