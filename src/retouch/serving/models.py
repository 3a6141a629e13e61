"""The checkpoints a server may run (``--ckpt``, ``--ckpt-dir``), the one it has loaded, and the separate VAEs
a request may ask for (``sd_vae``: ``--vae-dir``, ``*.vae.*`` files among the checkpoints, ``--vae-path``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retouch.loading import load_model
from retouch.models import Model
from retouch.models.checkpoint import cached_sha256
from retouch.models.loader import TINY_MODELS, load_vae
from retouch.models.model import VaeInfo, dtype_of
from retouch.models.paths import natural_key
from retouch.pipeline.resources import JobResources
from retouch.upscalers import UpscalerFolders
from retouch.upscalers.spandrel_models import ModelCache

logger = logging.getLogger(__name__)
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")
AUTOMATIC_VAE = ("Automatic", "auto")  # "auto": A1111's name in old settings files
KEPT_VAES = 2  # separate VAEs kept loaded (each with the checkpoint it was last used with)


def vae_settings(vaes: Iterable[str]) -> list[str]:
    """What ``sd_vae`` may be set to, as A1111 lists it: "Automatic", "None", then the separate VAEs."""
    return [AUTOMATIC_VAE[0], "None", *vaes]


@dataclass
class Checkpoint:
    name: str  # file name relative to the checkpoint folder (A1111's "name")
    path: Path | str

    @property
    def model_name(self) -> str:
        return Path(self.name).stem if not isinstance(self.path, str) else self.name

    @property
    def sha256(self) -> str | None:
        """Known once the file was hashed (when it was first loaded), as in A1111."""
        return None if isinstance(self.path, str) else cached_sha256(self.path)

    @property
    def short_hash(self) -> str | None:
        sha = self.sha256
        return sha[:10] if sha else None

    @property
    def config(self) -> str | None:
        """The same-stem ``.yaml`` beside the checkpoint, when there is one."""
        if isinstance(self.path, str) or not self.path.with_suffix(".yaml").is_file():
            return None
        return str(self.path.with_suffix(".yaml"))

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]" if self.short_hash else self.name


@dataclass
class ModelManager:
    """The checkpoints a request may name (``--ckpt``, ``--ckpt-dir``) and the one loaded."""

    ckpt: str | None = None
    ckpt_dir: str | None = None
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    default: str = ""
    load_kwargs: dict = field(default_factory=dict)
    vae_tiling: str = "auto"
    vae_dir: str | None = None
    vae_path: str | None = None  # A1111 --vae-path: this VAE for every checkpoint, whatever sd_vae says
    vaes: dict[str, Path] = field(default_factory=dict)  # by file name, as A1111's sd_vae values
    excluded: tuple[str, ...] = ()  # folders below --ckpt-dir that hold other files (LoRAs, embeddings, VAEs, …)
    upscaler_folders: UpscalerFolders = field(default_factory=UpscalerFolders)  # --esrgan-models-path and friends
    _loaded: tuple[str, Model] | None = None
    _other: tuple[str, Model] | None = None  # a job's second checkpoint (refiner, hires checkpoint), kept for the next
    _upscalers: ModelCache = field(default_factory=ModelCache)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _vaes: dict[str, tuple[Path, Any, VaeInfo]] = field(default_factory=dict)  # checkpoint → its separate VAE
    _vae_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.refresh()
        if self.ckpt:
            path = Path(self.ckpt)
            self.default = self.find(path.name if self.ckpt not in TINY_MODELS and path.exists() else self.ckpt).name
        elif not self.default:
            self.default = next(iter(self.checkpoints))

    def refresh(self) -> None:
        found: dict[str, Checkpoint] = {}
        if self.ckpt_dir:
            folder = Path(self.ckpt_dir)
            if not folder.is_dir():
                raise ValueError(f"--ckpt-dir: not a folder: {folder}")
            excluded = [Path(d).resolve() for d in self.excluded]
            for path in sorted(folder.rglob("*")):
                if _is_vae_file(path) or any(path.resolve().is_relative_to(d) for d in excluded):
                    continue  # A1111 lists x.vae.safetensors among the VAEs; LoRAs, embeddings: not checkpoints
                if path.suffix.lower() in CHECKPOINT_SUFFIXES and path.is_file() or path.is_dir() and (path / "model_index.json").is_file():
                    found[str(path.relative_to(folder))] = Checkpoint(str(path.relative_to(folder)), path)
        if self.ckpt and self.ckpt not in TINY_MODELS:
            path = Path(self.ckpt)
            if path.exists():
                found.setdefault(path.name, Checkpoint(path.name, path))
            elif not any(self.ckpt in (c.name, c.model_name) for c in found.values()):  # a name in --ckpt-dir
                raise ValueError(f"--ckpt: no such file{' or checkpoint in --ckpt-dir' if self.ckpt_dir else ''}: "
                                 f"{path}")
        if not found or (self.ckpt in TINY_MODELS):
            for name in TINY_MODELS:
                found.setdefault(name, Checkpoint(name, name))
        self.checkpoints = found
        self.vaes = self._find_vaes()

    def _find_vaes(self) -> dict[str, Path]:
        found = [p for p in Path(self.ckpt_dir).rglob("*.vae.*") if _is_vae_file(p)] if self.ckpt_dir else []
        if self.vae_dir:
            folder = Path(self.vae_dir)
            if not folder.is_dir():
                raise ValueError(f"--vae-dir: not a folder: {folder}")
            found += [p for p in folder.rglob("*") if p.suffix.lower() in VAE_SUFFIXES and p.is_file()]
        if self.vae_path and not Path(self.vae_path).exists():
            raise ValueError(f"--vae-path: no such file or folder: {self.vae_path}")
        return {p.name: p for p in sorted(found, key=lambda p: natural_key(p.name))}

    def find_vae(self, name: str) -> str:
        """``name`` if a request may set ``sd_vae`` to it ("Automatic", "None" or a listed VAE's file name)."""
        if isinstance(name, str) and (name in AUTOMATIC_VAE or name == "None" or name in self.vaes):
            return name
        listed = ", ".join(vae_settings(self.vaes))
        raise ValueError(f"sd_vae: unknown VAE {name!r}"[:200] + f"; available: {listed}"
                         + ("" if self.vaes else " (start the server with --vae-dir to offer more)"))

    def vae_for(self, checkpoint: Checkpoint, setting: str) -> Path | None:
        """The VAE file a job on ``checkpoint`` uses under ``sd_vae = setting`` (None: the checkpoint's own), as
        A1111 resolves it: --vae-path; a named VAE; "None"; "Automatic": the first listed VAE whose file name
        starts with the checkpoint's, else its own."""
        if self.vae_path:
            return Path(self.vae_path)
        if setting not in AUTOMATIC_VAE:
            return None if setting == "None" else self.vaes[self.find_vae(setting)]
        if isinstance(checkpoint.path, Path):
            stem = checkpoint.path.name.rsplit(".", 1)[0]
            return next((path for name, path in self.vaes.items() if name.startswith(stem)), None)
        return None

    def with_vae(self, model: Model, checkpoint_name: str, setting: str) -> Model:
        """``model`` (loaded from ``checkpoint_name``) with the VAE ``sd_vae = setting`` asks for: a view for one
        job (:meth:`Model.with_vae`); the shared model keeps its own VAE. The last separate VAE used with each of
        the last :data:`KEPT_VAES` checkpoints stays loaded."""
        wanted = self.vae_for(self.find(checkpoint_name), setting)
        if wanted is None:
            return model
        with self._vae_lock:
            cached = self._vaes.pop(checkpoint_name, None)
            if cached is None or cached[0] != wanted:
                dtype = self.load_kwargs.get("vae_dtype") or dtype_of(model.vae)
                vae, info = load_vae(wanted, model, dtype, channels_last=bool(self.load_kwargs.get("channels_last")))
                cached = (wanted, vae, info)
                logger.info("VAE for %s: %s", checkpoint_name, wanted)
            self._vaes[checkpoint_name] = cached  # most recently used last
            while len(self._vaes) > KEPT_VAES:
                self._vaes.pop(next(iter(self._vaes)))
        return model.with_vae(cached[1], cached[2])

    def checkpoint_for(self, requested: str | None, keep: bool) -> str:
        """The checkpoint a request runs on (``requested`` or the default); ``keep`` makes it the default
        (A1111's ``override_settings_restore_afterwards: false``)."""
        name = self.find(requested).name if requested else self.default
        if requested and keep:
            self.default = name
        return name

    def find(self, name: str, field: str = "override_settings.sd_model_checkpoint") -> Checkpoint:
        """A checkpoint by title, file name, stem or short hash (as A1111 matches them); ``field`` names what asked
        for it in the error."""
        if not isinstance(name, str):
            raise ValueError(f"{field} must be a checkpoint name (a string), got {name!r}"[:200])
        for ckpt in self.checkpoints.values():
            if name in (ckpt.title, ckpt.name, ckpt.model_name) or (ckpt.short_hash and name == ckpt.short_hash):
                return ckpt
        stem = name.split(" [")[0]
        for ckpt in self.checkpoints.values():
            if stem in (ckpt.name, ckpt.model_name):
                return ckpt
        raise ValueError(f"{field}: could not find checkpoint with name {name!r}; available: "
                         f"{', '.join(c.name for c in self.checkpoints.values())}")

    def get(self, name: str | None = None, vae: str | None = None) -> Model:
        """The checkpoint ``name`` (None: the default), loaded if needed (the one loaded before is let go); with
        ``vae`` (a job's ``sd_vae``), a view of it with that VAE (:meth:`with_vae`)."""
        ckpt = self.find(name) if name else self.find(self.default)
        with self._lock:
            if self._loaded is None or self._loaded[0] != ckpt.name:
                self._loaded = None  # free the old model before loading the next
                self._vaes.clear()
                model = load_model(ckpt.path, **self.load_kwargs)
                model.vae_tiling = self.vae_tiling
                self._loaded = (ckpt.name, model)
            loaded = self._loaded[1]
        return self.with_vae(loaded, ckpt.name, vae) if vae is not None else loaded

    def other(self, name: str, vae: str | None = None) -> Model:
        """A second checkpoint beside the loaded one, for a job that needs both (the refiner, the hires
        checkpoint): both stay in memory while the job runs, and the second is kept for the next job (the one kept
        before is let go first)."""
        ckpt = self.find(name)
        with self._lock:
            if self._other is None or self._other[0] != ckpt.name:
                self._other = None
                model = load_model(ckpt.path, **self.load_kwargs)
                model.vae_tiling = self.vae_tiling
                self._other = (ckpt.name, model)
            other = self._other[1]
        return self.with_vae(other, ckpt.name, vae) if vae is not None else other

    def resources(self, model: Model, name: str, vae: str | None) -> JobResources:
        """What a job on ``model`` (checkpoint ``name``) may reach: the other checkpoints, the upscalers."""
        return JobResources(_JobCheckpoints(self, model, name, vae), self.upscaler_folders,
                            upscaler_cache=self._upscalers)

    def release_other(self) -> None:
        """Let the second checkpoint go (a job that needs none ran)."""
        with self._lock:
            self._other = None

    @property
    def loaded(self) -> Model | None:
        """The model in memory, if any (without loading one)."""
        loaded = self._loaded
        return loaded[1] if loaded is not None else None

    @property
    def loaded_title(self) -> str:
        return self._loaded[1].title if self._loaded else self.find(self.default).title


@dataclass
class _JobCheckpoints:
    """The checkpoints one job may switch to: its own model under any of its names, the others through the
    manager's second slot."""

    models: ModelManager
    model: Model
    name: str
    vae: str | None

    def checkpoint(self, name: str, field: str) -> Model:
        ckpt = self.models.find(name, field)
        return self.model if ckpt.name == self.name else self.models.other(ckpt.name, self.vae)

    def with_vae(self, model: Model, setting: str, field: str) -> Model:
        """The checkpoint ``model`` was loaded from, with the VAE ``setting`` names (its own under "None")."""
        try:
            setting = self.models.find_vae(setting)
        except ValueError as e:
            raise ValueError(f"{field}: {e}") from None
        ckpt = self.models.find(model.title, field)
        raw = self.models.get(ckpt.name) if ckpt.name == self.name else self.models.other(ckpt.name)
        return self.models.with_vae(raw, ckpt.name, setting)


def _is_vae_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(".vae" + suffix) for suffix in VAE_SUFFIXES) and path.is_file()


def manager_settings(config: Any) -> dict[str, Any]:
    """What a :class:`ModelManager` is built from, out of a :class:`~retouch.serving.state.ServerConfig` (the local
    backend's, the cluster ingress's and every replica's are the same)."""
    load_kwargs = {**config.load_kwargs, "lora_dir": config.lora_dir, "embeddings_dir": config.embeddings_dir}
    excluded = tuple(str(d) for d in (config.lora_dir, config.embeddings_dir, config.vae_dir, *config.upscaler_dirs())
                     if d)
    return {"ckpt": config.ckpt, "ckpt_dir": config.ckpt_dir, "load_kwargs": load_kwargs,
            "vae_tiling": config.vae_tiling, "vae_dir": config.vae_dir, "vae_path": config.vae_path,
            "excluded": excluded, "upscaler_folders": config.upscaler_folders()}
