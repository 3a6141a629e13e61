"""Extra networks: LoRA-family networks (``<lora:…>`` tags) and textual-inversion embeddings.

:class:`ExtraNetworks` is what a :class:`~retouch.models.Model` knows about them: its LoRA folder, its
embeddings, the networks read so far and the patcher that applies them to its weights.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from retouch.networks.embeddings import Embedding, EmbeddingDatabase
from retouch.networks.files import LoraFolder, NetworkFile
from retouch.networks.layers import Layer, text_layers, unet_layers
from retouch.networks.loading import LoadedNetwork, NetworkError, load_network
from retouch.networks.patching import ActiveNetwork, NetworkPatcher

if TYPE_CHECKING:
    from retouch.models.model import Model

__all__ = ["ActiveNetwork", "Embedding", "EmbeddingDatabase", "ExtraNetworks", "LoadedNetwork", "LoraFolder",
           "NetworkError", "NetworkFile", "attach", "networks_of"]


def attach(model: Model, lora_dir: str | os.PathLike | None = None,
           embeddings_dir: str | os.PathLike | None = None) -> ExtraNetworks:
    """Give ``model`` its LoRA folder and embeddings (A1111's ``--lora-dir`` and ``--embeddings-dir``), both scanned
    now; they live beside the model (``model.extra_networks``), which knows nothing of them."""
    model.extra_networks = ExtraNetworks(model, lora_dir, embeddings_dir)
    return model.extra_networks


def networks_of(model: Model) -> ExtraNetworks:
    """``model``'s extra networks (empty folders when none were attached)."""
    return model.extra_networks if model.extra_networks is not None else attach(model)


class ExtraNetworks:
    """A model's LoRA folder (``lora_dir``), embeddings (``embeddings_dir``) and applied networks."""

    def __init__(self, model: Model, lora_dir: str | os.PathLike | None = None,
                 embeddings_dir: str | os.PathLike | None = None):
        self._model = model
        self.loras = LoraFolder(lora_dir)
        encoders = [encoder for _, encoder in model.text_encoders]  # SDXL: an embedding spans both widths
        self.embeddings = EmbeddingDatabase(embeddings_dir, sum(e.width for e in encoders), encoders[0].tokenize)
        self._layers: dict[str, Layer] | None = None
        self._patcher: NetworkPatcher | None = None
        self._loaded: OrderedDict[str, LoadedNetwork] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def layers(self) -> dict[str, Layer]:
        """The model's patchable layers by A1111 name (built on first use)."""
        if self._layers is None:
            layers = {layer.name: layer for layer in unet_layers(self._model.unet)}
            for prefix, encoder in self._model.text_encoders:
                layers.update((layer.name, layer) for layer in text_layers(encoder.transformer, encoder.kind, prefix))
            self._layers = layers
        return self._layers

    @property
    def patcher(self) -> NetworkPatcher:
        if self._patcher is None:
            self._patcher = NetworkPatcher(self.layers)
        return self._patcher

    @property
    def weights_patched(self) -> bool:
        """Whether a job's networks are in the model's weights now."""
        return self._patcher is not None and self._patcher.active

    @property
    def is_sd2(self) -> bool:
        return any(name.startswith("model_transformer_resblocks") for name in self.layers)

    def load(self, file: NetworkFile, keep: int = 0) -> LoadedNetwork:
        """The network in ``file`` matched to this model: read once, read again when the file changes.

        ``keep`` networks besides the most recent are kept in memory (A1111 ``lora_in_memory_limit``).
        """
        key = str(file.path)
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None and cached.stamp == file.stamp():
                self._loaded.move_to_end(key)
                return cached
        network = load_network(file, self.layers, self.is_sd2)
        with self._lock:
            self._loaded[key] = network
            self._loaded.move_to_end(key)
            while len(self._loaded) > max(keep, 0) + 8:  # a job's own networks stay: at most a handful
                self._loaded.popitem(last=False)
        return network

    def forget(self, keep: set[str], limit: int) -> None:
        """Drop read networks beyond the ``keep`` set (paths) and ``limit`` others."""
        with self._lock:
            others = [k for k in self._loaded if k not in keep]
            for key in others[: max(len(others) - limit, 0)]:
                del self._loaded[key]

    @property
    def loaded_networks(self) -> list[str]:
        """Names of the networks held in memory, least recently used first."""
        return [n.name for n in self._loaded.values()]
