"""The checkpoints a server may run (``--ckpt``, ``--ckpt-dir``) and the one it has loaded."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from retouch.models import Model, load_model
from retouch.models.checkpoint import cached_sha256
from retouch.models.loader import TINY_MODELS

logger = logging.getLogger(__name__)
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


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
    _loaded: tuple[str, Model] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
            for path in sorted(folder.rglob("*")):
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

    def find(self, name: str) -> Checkpoint:
        """A checkpoint by title, file name, stem or short hash (as A1111 matches them)."""
        if not isinstance(name, str):
            raise ValueError(f"sd_model_checkpoint must be a checkpoint name (a string), got {name!r}"[:200])
        for ckpt in self.checkpoints.values():
            if name in (ckpt.title, ckpt.name, ckpt.model_name) or (ckpt.short_hash and name == ckpt.short_hash):
                return ckpt
        stem = name.split(" [")[0]
        for ckpt in self.checkpoints.values():
            if stem in (ckpt.name, ckpt.model_name):
                return ckpt
        raise ValueError(f"override_settings.sd_model_checkpoint: unknown checkpoint {name!r}; available: "
                         f"{', '.join(c.name for c in self.checkpoints.values())}")

    def get(self, name: str | None = None) -> Model:
        ckpt = self.find(name) if name else self.find(self.default)
        with self._lock:
            if self._loaded is None or self._loaded[0] != ckpt.name:
                self._loaded = None  # free the old model before loading the next
                model = load_model(ckpt.path, **self.load_kwargs)
                model.vae_tiling = self.vae_tiling
                self._loaded = (ckpt.name, model)
            return self._loaded[1]

    @property
    def loaded(self) -> Model | None:
        """The model in memory, if any (without loading one)."""
        loaded = self._loaded
        return loaded[1] if loaded is not None else None

    @property
    def loaded_title(self) -> str:
        return self._loaded[1].title if self._loaded else self.find(self.default).title
