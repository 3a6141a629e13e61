"""Reading weight files from disk: single-file ``.safetensors`` and ``.ckpt``/``.pt``/``.pth``.

This is the only place that opens weight files. ``.ckpt`` files are unpickled with
``torch.load(weights_only=True)``: a pickle that would import or call anything beyond tensors and
plain containers is refused before any of it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
import threading
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

logger = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """A weight file that cannot be used, with the file and the reason in the message."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """All tensors of a single weight file, keyed as stored (an outer ``state_dict`` is unwrapped).

    A safetensors file gives a :class:`SafetensorsFile` (each tensor read when asked for); a
    ``.ckpt`` gives a dict of memory-mapped tensors. Raises :class:`CheckpointError` (a ``ValueError``) for a
    missing, unreadable, corrupt or unsafe file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if not path.is_file():
        raise CheckpointError(path, "not a file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state = _read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        state = _read_pickle(path)
    else:
        raise CheckpointError(path, f"unknown weight file type {suffix!r}; expected .safetensors or .ckpt")
    if not state:
        raise CheckpointError(path, "the file holds no tensors")
    return state


_SAFETENSORS_ERRORS = (SafetensorError, OSError, json.JSONDecodeError, RuntimeError)


def _read_safetensors(path: Path) -> StateDict:
    try:
        return SafetensorsFile(path)
    except _SAFETENSORS_ERRORS as e:
        raise CheckpointError(path, f"not a valid safetensors file (truncated or corrupt?): {e}") from None


_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(frozen=True)
class TensorLocation:
    """A row-major tensor stored in a file: its first byte's offset, dtype and shape."""

    path: Path
    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]


class SafetensorsFile(Mapping[str, torch.Tensor]):
    """The tensors of a ``.safetensors`` file, each read from disk when it is looked up.

    Building a network from it holds one network's tensors at a time instead of the whole file
    next to the model, which keeps the load's peak memory near the model's own size. safetensors
    maps the file privately (a tensor can be changed in place; the file never is) and a tensor
    shares the mapping's pages, which count as the process's resident memory while the mapping
    lives. The file is therefore reopened after every ``window`` bytes read: once a window's
    tensors have been cast and dropped, its mapping goes with them.
    """

    def __init__(self, path: Path, window: int = 256 << 20):
        self.path = path
        self._window = window
        self._open()
        self._keys = list(self._handle.keys())
        self._key_set = frozenset(self._keys)
        self._header: tuple[dict[str, Any], int] | None = None

    def location(self, key: str) -> TensorLocation | None:
        """Where tensor ``key`` lies in the file, for reading parts of it later (None: not a float tensor of a
        dtype torch reads from bytes)."""
        if key not in self._key_set:
            raise KeyError(key)
        if self._header is None:
            self._header = read_safetensors_header(self.path)
        header, data_start = self._header
        entry = header.get(key)
        if not isinstance(entry, dict) or entry.get("dtype") not in _FLOAT_DTYPES:
            return None
        dtype = _FLOAT_DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        shape = tuple(int(n) for n in entry["shape"])
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(self.path, f"tensor {key}: its byte range does not fit its shape {shape}")
        return TensorLocation(self.path, data_start + begin, dtype, shape)

    def _open(self) -> None:
        self._handle = safe_open(str(self.path), framework="pt", device="cpu")
        self._read_since_open = 0

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._key_set:
            raise KeyError(key)
        if self._read_since_open > self._window:
            self._open()
        try:
            tensor = self._handle.get_tensor(key)
        except _SAFETENSORS_ERRORS as e:
            raise CheckpointError(self.path, f"could not read tensor {key} (truncated or corrupt?): {e}") from None
        self._read_since_open += tensor.numel() * tensor.element_size()
        return tensor

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _read_pickle(path: Path) -> StateDict:
    return _unwrap(path, read_pickle(path))


def read_pickle(path: str | os.PathLike) -> object:
    """The object in a ``.ckpt``/``.pt``/``.bin`` file (tensors, numbers, strings and containers only):
    refused, before any of it runs, when the pickle would import or call anything else."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        # Old-style (pre torch 1.6) pickles are refused too: weights_only handles both, but we want
        # a clear message for random bytes.
        with open(path, "rb") as f:
            head = f.read(2)
        if not head.startswith(b"\x80"):
            raise CheckpointError(path, "not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            path,
            "refused to load: the pickle asks to run code or build objects other than tensors "
            f"({_first_line(e)}). Convert the file to .safetensors with a tool you trust.",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(path, f"could not read the checkpoint (truncated or corrupt?): {_first_line(e)}") from None


def _unwrap(path: Path, obj: object) -> StateDict:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dictionary of tensors, found {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return tensors


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def file_sha256(path: Path, cache_dir: Path, *, after_header: bool = False) -> str:
    """sha256 of a file, cached by absolute path, size and mtime (a 4 GB file is hashed once).

    ``after_header``: hash only what follows a safetensors file's header (kohya's "addnet" hash, which
    A1111 writes for LoRA files: it does not change when only the metadata does).
    """
    stat = path.stat()
    cache_file = cache_dir / "hashes.json"
    key = str(path.resolve()) + ("#addnet" if after_header else "")
    stamp = [stat.st_size, stat.st_mtime_ns]
    cache = _read_json(cache_file)
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if after_header:
            f.seek(8 + int.from_bytes(f.read(8), "little"))
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    cache = _read_json(cache_file)  # re-read: another process may have written meanwhile
    cache[key] = {"stamp": stamp, "sha256": sha}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(cache_file)
    except OSError as e:
        logger.warning("could not write the hash cache %s: %s", cache_file, e)
    return sha


MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """A safetensors file's JSON header and the offset its tensor data starts at. Raises
    :class:`CheckpointError` for a file that is not safetensors."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 < size <= MAX_HEADER_BYTES:
                raise CheckpointError(path, "not a safetensors file (bad header length)")
            header = json.loads(f.read(size))
    except (OSError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(path, f"could not read the safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a safetensors file (its header is not a JSON object)")
    return header, 8 + size


def read_safetensors_metadata(path: Path) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file, as A1111 reads it: string values that hold a JSON object
    are decoded. Raises :class:`CheckpointError` for a file that is not safetensors."""
    raw = read_safetensors_header(path)[0].get("__metadata__")
    metadata: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        metadata[key] = value
        if isinstance(value, str) and value.startswith("{"):
            with contextlib.suppress(ValueError):
                metadata[key] = json.loads(value)
    return metadata


def cached_sha256(path: Path, cache_dir: Path | None = None, *, after_header: bool = False) -> str | None:
    """The cached sha256 of ``path`` if it is known and still valid (nothing is hashed here)."""
    if cache_dir is None:
        from retouch.models.paths import cache_dir as default_cache_dir

        cache_dir = default_cache_dir()
    try:
        stat = path.stat()
    except OSError:
        return None
    entry = _read_json(cache_dir / "hashes.json").get(str(path.resolve()) + ("#addnet" if after_header else ""))
    if isinstance(entry, dict) and entry.get("stamp") == [stat.st_size, stat.st_mtime_ns]:
        return entry.get("sha256")
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
