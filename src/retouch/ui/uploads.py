"""The page's own folder for uploaded files and Gradio's cached outputs: private to this server, bounded, swept.

Gradio keeps what the page uploads, and the images it shows, in one cache folder (``GRADIO_TEMP_DIR``, by default
``/tmp/gradio``, shared by every Gradio app on the machine, never emptied). Here it is a fresh ``0700`` folder of
this process, removed at exit, and:

* it holds at most ``quota_bytes``: an upload that would exceed it first makes room by deleting the files unused
  longest (never one used in the last ``keep_seconds``), else it is refused;
* a file unused for ``ttl_seconds`` is deleted by a background sweep; "used" is its modification time, which the
  page guard renews whenever a job names the file;
* an upload cut off mid-way leaves a temporary file directly in the folder (Gradio names them ``tmp…``); the sweep
  deletes those once they are older than a request body may take to arrive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    path: Path
    size: int
    used: float  # modification time


class UploadFolder:
    """See the module docstring. Thread-safe; every method does file-system work: call it off the event loop."""

    def __init__(self, *, quota_bytes: int, ttl_seconds: float = 3600.0, keep_seconds: float = 300.0,
                 partial_seconds: float = 120.0, parent: str | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="retouch-page-", dir=parent)).resolve()
        self.quota_bytes = quota_bytes
        self.ttl_seconds = ttl_seconds
        self.keep_seconds = keep_seconds
        self.partial_seconds = partial_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- what a request names --------------------------------------------------------------------
    def resolve(self, path: str) -> Path | None:
        """The regular file ``path`` names inside this folder (links resolved), or None: anything else — another
        folder, a device, a FIFO, a link pointing out, a missing file — is not an upload."""
        try:
            real = Path(os.path.realpath(os.path.abspath(path)))
        except (OSError, ValueError):
            return None
        if not real.is_relative_to(self.root) or real == self.root:
            return None
        try:
            return real if stat.S_ISREG(os.stat(real).st_mode) else None
        except OSError:
            return None

    def touch(self, paths: Iterable[Path]) -> None:
        """Mark files as used now (a job named them): the sweep keeps them another ``ttl_seconds``."""
        for path in paths:
            with contextlib.suppress(OSError):
                os.utime(path)

    def remove(self, paths: Iterable[Path]) -> None:
        """Delete files of this folder (a job's one-off uploads, once it has read them)."""
        for path in paths:
            if path.is_relative_to(self.root):
                with contextlib.suppress(OSError):
                    path.unlink()
                    if path.parent != self.root:
                        path.parent.rmdir()  # Gradio puts each upload in a folder named by its hash

    # -- room -------------------------------------------------------------------------------------
    def make_room(self, size: int) -> bool:
        """True when ``size`` more bytes fit under the quota, after deleting the files unused longest if needed."""
        with self._lock:
            entries = self._entries()
            used = sum(e.size for e in entries)
            if used + size <= self.quota_bytes:
                return True
            cutoff = time.time() - self.keep_seconds
            for entry in sorted(entries, key=lambda e: e.used):
                if entry.used > cutoff:
                    break
                self.remove([entry.path])
                used -= entry.size
                if used + size <= self.quota_bytes:
                    return True
            return False

    def used_bytes(self) -> int:
        return sum(e.size for e in self._entries())

    def sweep(self, now: float | None = None) -> int:
        """Delete files unused for ``ttl_seconds`` and abandoned partial uploads; the number deleted."""
        now = time.time() if now is None else now
        deleted = 0
        with self._lock:
            for entry in self._entries():
                partial = entry.path.parent == self.root
                if now - entry.used > (self.partial_seconds if partial else self.ttl_seconds):
                    self.remove([entry.path])
                    deleted += 1
        return deleted

    def _entries(self) -> list[_Entry]:
        entries = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                path = Path(folder) / name
                with contextlib.suppress(OSError):
                    info = os.lstat(path)
                    entries.append(_Entry(path, info.st_size, info.st_mtime))
        return entries

    # -- life -------------------------------------------------------------------------------------
    def start(self, every_seconds: float = 30.0) -> None:
        """Sweep in a background thread every ``every_seconds`` until :meth:`close`."""
        def run() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - a failed sweep is retried at the next tick
                    logger.exception("sweeping the page's upload folder failed")

        self._sweeper = threading.Thread(target=run, name="retouch-uploads", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Stop sweeping and delete the folder with everything in it."""
        self._stop.set()
        shutil.rmtree(self.root, ignore_errors=True)
