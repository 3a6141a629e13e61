"""The library's :func:`load_model`: a checkpoint's networks (:func:`retouch.models.load_model`) with what lives
beside them — its extra networks (:func:`retouch.networks.attach`) and its upscaler folders — the one place that
joins them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retouch.upscalers import UpscalerFolders

if TYPE_CHECKING:
    from retouch.models import Model

PathLike = str | os.PathLike | None


def load_model(path: PathLike = None, *, lora_dir: PathLike = None, embeddings_dir: PathLike = None,
               esrgan_models_path: PathLike = None, realesrgan_models_path: PathLike = None,
               swinir_models_path: PathLike = None, dat_models_path: PathLike = None,
               scunet_models_path: PathLike = None, **kwargs: Any) -> Model:
    """Load a Stable Diffusion model (see :func:`retouch.models.load_model` for ``path``, ``vae``, ``device``,
    ``dtype``, ``vae_dtype``, ``channels_last`` and ``compile``) with its LoRA-family networks folder for ``<lora:name:weight>``
    tags (A1111 ``--lora-dir``), its textual-inversion embeddings folder (A1111 ``--embeddings-dir``) and the
    upscaler model folders the hires fix finds upscalers in (A1111 ``--esrgan-models-path`` and friends)."""
    from retouch.models import load_model as load_networks  # torch and diffusers: not for upscaler_folders
    from retouch.networks import attach

    model = load_networks(path, **kwargs)
    attach(model, lora_dir, embeddings_dir)
    model.upscaler_folders = upscaler_folders(esrgan_models_path, realesrgan_models_path, swinir_models_path,
                                              dat_models_path, scunet_models_path)
    return model


def upscaler_folders(esrgan: PathLike = None, realesrgan: PathLike = None, swinir: PathLike = None,
                     dat: PathLike = None, scunet: PathLike = None) -> UpscalerFolders:
    def folder(value: PathLike) -> Path | None:
        return Path(value) if value is not None else None

    return UpscalerFolders(folder(esrgan), folder(realesrgan), folder(swinir), folder(dat), folder(scunet))
