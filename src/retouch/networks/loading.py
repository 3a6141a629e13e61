"""Reading a network file and matching it to a model's layers (A1111 ``networks.load_network``).

Unlike A1111, which logs keys that match nothing at debug level and applies the rest, a file with a key
that matches no layer of the model, a layer whose tensors no format accepts, or tensors whose shapes do
not fit their layer is refused with a :class:`NetworkError` naming the file and the problem: a network
is applied whole or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from retouch.models.checkpoint import CheckpointError, read_state_dict
from retouch.networks.files import NetworkFile
from retouch.networks.formats import FormatError, Module, make_module
from retouch.networks.keys import resolve_layer, split_key
from retouch.networks.layers import Layer

logger = logging.getLogger(__name__)

BUNDLE_PREFIX = "bundle_emb"


class NetworkError(ValueError):
    """A network file that cannot be applied to this model; the message names the file and the problem."""


@dataclass
class LoadedNetwork:
    """A network file's modules, keyed by the A1111 layer name they patch."""

    file: NetworkFile
    stamp: tuple[int, int]
    modules: dict[str, Module]
    layers: dict[str, Layer]  # the layer each module patches (a fused one for ``_q_proj``-style names)
    bundled_embeddings: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.file.name


def load_network(file: NetworkFile, layers: Mapping[str, Layer], is_sd2: bool) -> LoadedNetwork:
    """Read ``file`` and match every key to one of ``layers``; :class:`NetworkError` when anything fails."""
    stamp = file.stamp()
    try:
        state = read_state_dict(file.path)
        grouped, bundles, unmatched = _group(state, layers, is_sd2)
    except CheckpointError as e:
        raise NetworkError(f"network {file.name!r}: {e}") from None
    if unmatched:
        sample = ", ".join(unmatched[:3])
        raise NetworkError(
            f"network {file.name!r} ({file.path}): {len(unmatched)} of its layers match nothing in this model "
            f"(e.g. {sample}); is it made for another model family ({file.sd_version})?")
    modules: dict[str, Module] = {}
    found: dict[str, Layer] = {}
    for key, (layer, weights) in grouped.items():
        try:
            module = make_module(key, weights)
            _check_shapes(module, layer)
        except FormatError as e:
            raise NetworkError(f"network {file.name!r} ({file.path}), layer {key}: {e}") from None
        modules[key], found[key] = module, layer
    if not modules and not bundles:
        raise NetworkError(f"network {file.name!r} ({file.path}): holds no network layers")
    return LoadedNetwork(file, stamp, modules, found, bundles)


def _group(state: Mapping[str, torch.Tensor], layers: Mapping[str, Layer], is_sd2: bool):
    grouped: dict[str, tuple[Layer, dict[str, torch.Tensor]]] = {}
    bundles: dict[str, dict[str, torch.Tensor]] = {}
    unmatched: list[str] = []
    for file_key in state:
        layer_key, part = split_key(file_key)
        if layer_key == BUNDLE_PREFIX:
            name, _, vector = part.partition(".")
            bundles.setdefault(name, {})[vector] = state[file_key].to(torch.float32, copy=True)
            continue
        resolved = resolve_layer(layer_key, layers, is_sd2)
        if resolved is None:
            if layer_key not in unmatched:
                unmatched.append(layer_key)
            continue
        key, layer = resolved
        # copy: a tensor read from a mapped file would keep the mapping (and its pages) alive
        grouped.setdefault(key, (layer, {}))[1][part] = state[file_key].to(copy=True)
    return grouped, bundles, unmatched


def _check_shapes(module: Module, layer: Layer) -> None:
    """Work the delta out on the meta device (shapes only, no arithmetic): a factor that does not fit its
    layer fails here, when the file is read, not while a job patches the model."""
    target = _target(module, layer)
    weight = getattr(target, "weight", None)
    if weight is None:
        raise FormatError(f"the layer ({type(target).__name__}) has no weight")
    meta = {k: v if v.ndim == 0 else v.to("meta") for k, v in module.w.items()}
    probe = type(module)(module.layer_key, meta, module.dim)
    try:
        delta, _ = probe.delta(torch.empty(weight.shape, device="meta"), 1.0)
    except (RuntimeError, IndexError, ValueError) as e:
        raise FormatError(f"its tensors do not fit the layer's weight {tuple(weight.shape)}: {e}") from None
    if not _fits(delta.shape, weight.shape):
        raise FormatError(f"its delta has shape {tuple(delta.shape)}, the layer's weight {tuple(weight.shape)}")


def _target(module: Module, layer: Layer) -> torch.nn.Module:
    if not layer.fused:
        return layer.module
    suffix = module.layer_key.rsplit("_", 2)[-2] if module.layer_key.endswith("_proj") else ""
    return dict(zip("qkv", layer.modules[:3], strict=True)).get(suffix, layer.modules[3])


def _fits(delta: torch.Size, weight: torch.Size) -> bool:
    """Equal, or a 4-channel conv delta on a 9-/8-channel input conv (inpainting, pix2pix: zero-padded)."""
    if delta == weight:
        return True
    return (len(delta) == 4 and len(weight) == 4 and delta[0] == weight[0] and delta[2:] == weight[2:]
            and delta[1] < weight[1])
