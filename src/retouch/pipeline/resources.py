"""What a job may reach besides its model: other checkpoints (the refiner, the hires checkpoint) and the
upscalers. The server's model manager is one :class:`Checkpoints`; the library's is :class:`CheckpointFolder`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from retouch.imageops.resize import Enlarge
from retouch.models.model import Model
from retouch.options import Options
from retouch.upscalers import UpscalerFolders, Upscalers, find_upscalers
from retouch.upscalers.spandrel_models import ModelCache

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


class Checkpoints(Protocol):
    def checkpoint(self, name: str, field: str) -> Model:
        """The checkpoint called ``name`` (title, file name, stem or short hash, as A1111 matches them), loaded;
        ``ValueError`` naming ``field`` and the choices when there is none."""
        ...


@dataclass
class CheckpointFolder:
    """The checkpoints of a folder, loaded on first use and kept (a library session's :class:`Checkpoints`).

    ``load(path)`` loads one (default: :func:`retouch.load_model` with ``load_kwargs``); ``models``: checkpoints
    already loaded, by path (the job's own model is found here, never loaded twice).
    """

    folder: Path | None
    load_kwargs: dict[str, Any]
    models: dict[Path, Model]
    load: Callable[..., Model] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, model: Model, **load_kwargs: Any) -> CheckpointFolder:
        """The folder ``model`` was loaded from, its networks folders and dtype for the others."""
        extra = model.extra_networks
        kwargs = {"lora_dir": extra.loras.folder, "embeddings_dir": extra.embeddings.folder} if extra else {}
        path = Path(model.path)
        folder = path.parent if path.exists() else None
        return cls(folder, {**kwargs, **load_kwargs}, {path.resolve() if folder else path: model})

    def paths(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file()
                      and ".vae." not in p.name.lower())

    def checkpoint(self, name: str, field: str) -> Model:
        for model in self.models.values():
            if name in (model.name, model.title, model.short_title, model.path.name, model.short_hash):
                return model
        paths = self.paths()
        stem = name.split(" [")[0]
        path = next((p for p in paths if stem in (p.name, p.stem, str(p.relative_to(self.folder or p.parent)))),
                    None)
        if path is None:
            listed = ", ".join(p.stem for p in paths) or f"none (no checkpoint folder: {self.folder})"
            raise ValueError(f"{field}: could not find checkpoint with name {name!r}; the checkpoints are: {listed}")
        with self._lock:
            key = path.resolve()
            if key not in self.models:
                load = self.load or _default_load
                self.models[key] = load(path, **self.load_kwargs)
            return self.models[key]


def _default_load(path: str | os.PathLike, **kwargs: Any) -> Model:
    from retouch.loading import load_model

    return load_model(path, **kwargs)


@dataclass(frozen=True)
class JobResources:
    """A job's other checkpoints and its upscalers (None: the job may use neither)."""

    checkpoints: Checkpoints | None = None
    upscaler_folders: UpscalerFolders | None = None
    upscalers: Upscalers | None = None  # a fixed list (default: found in the folders under the job's options)
    upscaler_cache: ModelCache = field(default_factory=ModelCache)  # upscaler models loaded, kept between jobs

    def upscalers_for(self, options: Options) -> Upscalers:
        """The upscalers a job under ``options`` sees (the list depends on ``realesrgan_enabled_models`` and
        ``dat_enabled_models``)."""
        if self.upscalers is not None:
            return self.upscalers
        return Upscalers(find_upscalers(self.upscaler_folders or UpscalerFolders(), options), self.upscaler_cache)

    def img2img_upscaler(self, options: Options, check: Callable[[], None]) -> Enlarge | None:
        """The ``upscaler_for_img2img`` option's upscaler, as an ``enlarge(image, scale)`` (None: Lanczos only);
        ``ValueError`` naming the option for one there is not (A1111 falls back to none without a word)."""
        name = options.upscaler_for_img2img
        if name in (None, "", "None"):
            return None
        upscalers = self.upscalers_for(options)
        info = upscalers.find(name, "upscaler_for_img2img")
        return lambda image, scale: upscalers.upscale(image, scale, info, options, check)

    def with_vae(self, model: Model, setting: str, field: str) -> Model:
        """``model`` with the VAE ``sd_vae = setting`` names (a view for one job), where the job's checkpoints
        can switch VAEs (the server's can); ``ValueError`` naming ``field`` otherwise."""
        switch = getattr(self.checkpoints, "with_vae", None)
        if switch is None:
            raise ValueError(f"{field}: this job cannot switch VAEs (got {setting!r}); load the model with the VAE "
                             "instead")
        return switch(model, setting, field)

    def checkpoint(self, name: str, field: str) -> Model:
        if self.checkpoints is None:
            raise ValueError(f"{field}: this job has no other checkpoints to choose from (got {name!r})")
        return self.checkpoints.checkpoint(name, field)
