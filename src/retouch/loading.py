"""The library's :func:`load_model`: a checkpoint's networks (:func:`retouch.models.load_model`) with its extra
networks beside them (:func:`retouch.networks.attach`) — the one place that joins the two."""

from __future__ import annotations

import os
from typing import Any

from retouch.models import Model
from retouch.models import load_model as load_networks
from retouch.networks import attach


def load_model(path: str | os.PathLike | None = None, *, lora_dir: str | os.PathLike | None = None,
               embeddings_dir: str | os.PathLike | None = None, **kwargs: Any) -> Model:
    """Load a Stable Diffusion model (see :func:`retouch.models.load_model` for ``path``, ``vae``, ``device``,
    ``dtype``, ``vae_dtype`` and ``channels_last``) with its LoRA-family networks folder for ``<lora:name:weight>``
    tags (A1111 ``--lora-dir``) and its textual-inversion embeddings folder (A1111 ``--embeddings-dir``)."""
    model = load_networks(path, **kwargs)
    attach(model, lora_dir, embeddings_dir)
    return model
