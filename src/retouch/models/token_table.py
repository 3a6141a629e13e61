"""A text encoder's token-embedding table left in its checkpoint file.

The table is the largest tensor of a text encoder (CLIP-L: 49,408 × 768, 152 MB in float32; SDXL's OpenCLIP
bigG: 253 MB) and a prompt uses a few dozen of its rows. :class:`FileTokenEmbedding` stands in for the
``nn.Embedding``: it reads the rows a lookup needs from the file (``pread`` on a descriptor held open, so a file
replaced by another one under the same name is not read), casts them as loading would have cast the whole
table, and keeps them. Lookups give exactly the values of the loaded table; ``state_dict()`` still holds the
whole table (read when asked for), so saving a model is unchanged.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import torch

from retouch.models.checkpoint import CheckpointError, TensorLocation


class FileTokenEmbedding(torch.nn.Module):
    """``nn.Embedding``'s lookup over the table at ``location``, in ``dtype``."""

    def __init__(self, location: TensorLocation, dtype: torch.dtype):
        super().__init__()
        if len(location.shape) != 2:
            raise CheckpointError(location.path, f"a token embedding of shape {location.shape} is not a table")
        self.location = location
        self.out_dtype = dtype
        self.num_embeddings, self.embedding_dim = location.shape
        self._row_bytes = self.embedding_dim * location.dtype.itemsize
        fd = os.open(location.path, os.O_RDONLY)
        weakref.finalize(self, os.close, fd)
        self._fd = fd
        self._stamp = _stamp(fd)
        self._rows: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.detach().to("cpu", torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_embeddings):
            raise IndexError("index out of range in self")
        unique, inverse = torch.unique(ids, return_inverse=True)
        wanted = unique.tolist()
        with self._lock:
            self._read([i for i in wanted if i not in self._rows])
            rows = [self._rows[i] for i in wanted]
        table = torch.stack(rows) if rows else torch.empty(0, self.embedding_dim, dtype=self.out_dtype)
        return table[inverse].to(input_ids.device)

    def _read(self, ids: list[int]) -> None:
        if not ids:
            return
        if _stamp(self._fd) != self._stamp:
            raise CheckpointError(self.location.path, "the file changed on disk since the model was loaded "
                                                      "(its token embeddings are read from it); load it again")
        for i in ids:
            data = os.pread(self._fd, self._row_bytes, self.location.offset + i * self._row_bytes)
            if len(data) != self._row_bytes:
                raise CheckpointError(self.location.path, "the token embedding table is cut short (truncated?)")
            row = torch.frombuffer(bytearray(data), dtype=self.location.dtype)
            self._rows[i] = row.to(self.out_dtype, copy=True)

    def full_table(self) -> torch.Tensor:
        """The whole table in ``dtype`` (read now; for saving the model)."""
        size = self.num_embeddings * self._row_bytes
        data = os.pread(self._fd, size, self.location.offset)
        if len(data) != size:
            raise CheckpointError(self.location.path, "the token embedding table is cut short (truncated?)")
        table = torch.frombuffer(bytearray(data), dtype=self.location.dtype).view(self.location.shape)
        return table.to(self.out_dtype, copy=True)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.full_table()

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, dtype={self.out_dtype}, rows read: "
                f"{len(self._rows)}, file={self.location.path.name}")


def _stamp(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_size, stat.st_mtime_ns
