"""Textual-inversion embeddings (A1111 ``modules/textual_inversion``).

Every ``.pt``/``.bin``/``.safetensors`` file below the embeddings folder is an embedding named by its
file stem. Layouts, as A1111 reads them: a training dict with one ``string_to_param`` entry (A1111's own
``.pt``), an SDXL dict with ``clip_l`` and ``clip_g``, or a single tensor under any key (diffusers
concepts, ``emb_params`` in safetensors). An embedding whose width is not the model's text-encoder width
is listed as skipped. A prompt uses an embedding where the tokens of its name appear (the longest name
first), and each vector takes one token's place.

A1111 rescans the folder before a job when the folder's modification time changed; so does
:meth:`EmbeddingDatabase.check_for_changes`. Files that cannot be read are reported in ``problems``
(A1111 only logs them).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from retouch.models.checkpoint import CheckpointError, file_sha256, read_pickle, read_state_dict
from retouch.models.paths import cache_dir

logger = logging.getLogger(__name__)

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")


@dataclass
class Embedding:
    """One embedding: ``vectors`` ``(n, width)`` float32, or per text encoder (``clip_l``/``clip_g``)."""

    name: str
    vectors: torch.Tensor | dict[str, torch.Tensor]
    width: int  # A1111's ``shape``
    count: int  # A1111's ``vectors``: tokens it takes
    step: Any = None
    sd_checkpoint: Any = None
    sd_checkpoint_name: Any = None
    path: Path | None = None
    bundled_in: str | None = None  # the LoRA file that carries it (A1111 writes that name as its hash)
    _sha256: str | None = field(default=None, repr=False)

    def for_encoder(self, key: str | None) -> torch.Tensor:
        """The vectors for one text encoder (``key`` None: the only one; SDXL: ``clip_l``/``clip_g``)."""
        if isinstance(self.vectors, dict):
            if key is None or key not in self.vectors:
                raise ValueError(f"embedding {self.name!r} has vectors for {sorted(self.vectors)}, not for {key}")
            return self.vectors[key]
        return self.vectors

    @property
    def short_hash(self) -> str:
        """What A1111 writes in ``TI hashes``: the first 12 hex digits of the file's sha256 (for an embedding
        bundled in a LoRA file, that network's name)."""
        if self.bundled_in is not None:
            return self.bundled_in
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path, cache_dir()) if self.path is not None else ""
        return self._sha256[:12]

    def as_api(self) -> dict[str, Any]:
        """An entry of ``GET /sdapi/v1/embeddings``."""
        return {"step": self.step, "sd_checkpoint": self.sd_checkpoint, "sd_checkpoint_name": self.sd_checkpoint_name,
                "shape": self.width, "vectors": self.count}


def embedding_from_data(data: Mapping[str, Any], name: str, path: Path | None = None) -> Embedding:
    """A1111's ``create_embedding_from_data``; ValueError for a layout it does not know."""
    vectors: torch.Tensor | dict[str, torch.Tensor]
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            raise ValueError("the embedding file has several terms in it (or none)")
        vectors = _tensor(next(iter(params.values())))
        width, count = vectors.shape[-1], vectors.shape[0]
    elif "clip_g" in data and "clip_l" in data:
        vectors = {k: _tensor(v) for k, v in data.items() if k in ("clip_g", "clip_l")}
        width, count = vectors["clip_g"].shape[-1] + vectors["clip_l"].shape[-1], vectors["clip_g"].shape[0]
    elif data and isinstance(next(iter(data.values())), torch.Tensor):
        if len(data) != 1:
            raise ValueError("the embedding file has several terms in it")
        vectors = _tensor(next(iter(data.values())))
        if vectors.ndim == 1:
            vectors = vectors[None]
        width, count = vectors.shape[-1], vectors.shape[0]
    else:
        raise ValueError("neither a textual inversion embedding nor a diffusers concept")
    return Embedding(name, vectors, int(width), int(count), data.get("step"), data.get("sd_checkpoint"),
                     data.get("sd_checkpoint_name"), path)


def _tensor(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2) or not value.is_floating_point():
        raise ValueError("its vectors are not a 1- or 2-dimensional float tensor")
    return value.detach().to(torch.float32, copy=True)


def read_embedding(path: Path) -> Embedding:
    """Read one embedding file; ValueError (:class:`CheckpointError`) naming the file when it cannot be used."""
    name = path.stem
    if path.suffix.lower() == ".safetensors":
        data: Any = dict(read_state_dict(path))
    else:
        data = read_pickle(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(path, f"expected a dictionary, found {type(data).__name__}")
    try:
        return embedding_from_data(data, name, path)
    except ValueError as e:
        raise CheckpointError(path, str(e)) from None


@dataclass
class _Contents:
    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, Embedding] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    lookup: dict[int, list[tuple[list[int], Embedding]]] = field(default_factory=dict)
    mtime: float | None = None


class EmbeddingDatabase:
    """The embeddings of one folder for one text-encoder width and tokenizer.

    ``tokenize(texts) -> token ids`` (no BOS/EOS) decides which token sequences name an embedding.
    """

    def __init__(self, folder: str | os.PathLike | None, width: int,
                 tokenize: Callable[[list[str]], list[list[int]]]):
        self.folder = Path(folder) if folder is not None else None
        self.width = width
        self._tokenize = tokenize
        self._lock = threading.Lock()
        self._contents = _Contents()
        self.refresh()

    @property
    def loaded(self) -> dict[str, Embedding]:
        """Usable embeddings by name, sorted by name (case-insensitive) as A1111 lists them."""
        return self._contents.loaded

    @property
    def skipped(self) -> dict[str, Embedding]:
        """Embeddings whose width does not fit this model's text encoder."""
        return self._contents.skipped

    @property
    def why_skipped(self) -> dict[str, str]:
        """Each skipped embedding → why."""
        return {name: f"its vectors are {e.width} wide; this model's text encoder takes {self.width}"
                for name, e in self.skipped.items()}

    @property
    def problems(self) -> dict[str, str]:
        """Files that could not be read → why."""
        return self._contents.problems

    def refresh(self) -> None:
        """Rescan the folder (``POST /sdapi/v1/refresh-embeddings``)."""
        contents = _Contents(mtime=self._folder_mtime())
        found: dict[str, Embedding] = {}
        for path in self._files():
            try:
                embedding = read_embedding(path)
            except (CheckpointError, OSError) as e:
                contents.problems[str(path)] = str(e)
                logger.warning("embedding %s not loaded: %s", path, e)
                continue
            found[embedding.name] = embedding
        for name in sorted(found, key=str.lower):
            embedding = found[name]
            if embedding.width == self.width:
                contents.loaded[name] = embedding
            else:
                contents.skipped[name] = embedding
        contents.lookup = self._index(contents.loaded.values())
        with self._lock:
            self._contents = contents

    def check_for_changes(self) -> None:
        """Rescan when the folder changed since the last scan (A1111 does this before every job)."""
        if self.folder is not None and self._folder_mtime() != self._contents.mtime:
            self.refresh()

    def find_at(self, tokens: Sequence[int], offset: int,
                extra: Mapping[int, list[tuple[list[int], Embedding]]] | None = None) -> tuple[Embedding, int] | None:
        """The embedding whose name's tokens start at ``tokens[offset]`` and how many tokens that name takes."""
        for index in (extra, self._contents.lookup):
            for ids, embedding in (index or {}).get(tokens[offset], ()):
                if list(tokens[offset:offset + len(ids)]) == ids:
                    return embedding, len(ids)
        return None

    def index(self, embeddings: Sequence[Embedding]) -> dict[int, list[tuple[list[int], Embedding]]]:
        """A lookup for extra embeddings (those a LoRA file bundles), used with :meth:`find_at`."""
        return self._index(embeddings)

    def _index(self, embeddings) -> dict[int, list[tuple[list[int], Embedding]]]:
        embeddings = list(embeddings)
        ids_of = self._tokenize([e.name for e in embeddings]) if embeddings else []
        lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        for ids, embedding in zip(ids_of, embeddings, strict=True):
            if ids:
                lookup.setdefault(ids[0], []).append((list(ids), embedding))
        for entries in lookup.values():
            entries.sort(key=lambda item: len(item[0]), reverse=True)
        return lookup

    def _files(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        files = []
        for root, _, names in os.walk(self.folder, followlinks=True):
            for name in sorted(names):
                path = Path(root) / name
                if path.suffix.lower() in EMBEDDING_SUFFIXES and path.stat().st_size > 0:
                    files.append(path)
        return files

    def _folder_mtime(self) -> float | None:
        try:
            return self.folder.stat().st_mtime if self.folder is not None else None
        except OSError:
            return None
