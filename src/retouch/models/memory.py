"""How a job's CPU memory is obtained from glibc's allocator and given back: few page faults, a low peak.

Two kinds of large blocks behave differently:

* **Sampling** calls the UNet many times, and every call allocates and frees the same blocks — among them the
  convolution weights' reordered copies (59 MB for an SD1.5-sized fp32 layer). Handed out fresh by the kernel
  each time, they are faulted in page by page again: 4.6 M page faults and 48 s instead of 41 s for a 256²
  fp32 SD1.5-sized job. Within :func:`keep_freed_blocks` (the sampling), glibc serves every block from its heap,
  where freed ones are reused; when it ends, the free memory is returned.
* **A VAE pass** runs once, and its activations grow 4× from one stage to the next: kept in the heap, freed
  blocks rarely fit the next ones and the heap grows beyond what is live (everything from the heap for the
  whole job raised the peak by 130–530 MB at 256²–512², SD1.5- and SDXL-sized). Outside the sampling, blocks
  of 32 MiB and more are mapped from the kernel and returned as soon as they are freed. That costs page
  faults, little for small passes and seconds for large ones (an SDXL-sized fp32 VAE at 512², whose widest
  activations are 256 MiB: decode 15.4 s instead of 12.4 s), so a pass whose widest activation reaches
  :data:`LARGE_BLOCK` keeps its freed blocks as the sampling does (:func:`keep_freed_blocks` with ``when``).

:func:`return_freed_memory` marks a job: it fixes that 32 MiB threshold (glibc's own moves with what the
process freed before, so a job's page faults depended on its history) and keeps the heap's top while it
runs; when the last running job ends, all free memory is returned (``malloc_trim``), so a process's memory
between jobs is what it was. Where the calls do not exist (not Linux, not glibc) these do nothing.

(Transparent huge pages for the weights at load time were tried and left out: 4× fewer faults, but under a
fragmented page cache the kernel's compaction made an SD1.5-sized load 2× slower as often as it made an
SDXL-sized one 10 % faster.)
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
import threading
from collections.abc import Iterator
from functools import lru_cache

# glibc's malloc.h parameters, their defaults, and what a job sets them to
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 128 * 1024, 65536
JOB_MMAP_THRESHOLD = 32 * 1024 * 1024  # the ceiling of glibc's own moving threshold
KEEP_ALL = 2**31 - 1  # mallopt takes an int
LARGE_BLOCK = 128 * 1024 * 1024  # a VAE pass with activations this large keeps its freed blocks


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_lock = threading.Lock()


class _Setting:
    """glibc parameters that are the process's: set by the first of nested blocks (any thread), reset by the last,
    which also returns all free memory to the kernel."""

    def __init__(self, on: tuple[tuple[int, int], ...], off: tuple[tuple[int, int], ...]):
        self.on, self.off, self.users = on, off, 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        libc = _glibc()
        if libc is None:
            yield
            return
        with _lock:
            if self.users == 0:
                for param, value in self.on:
                    libc.mallopt(param, value)
            self.users += 1
        try:
            yield
        finally:
            with _lock:
                self.users -= 1
                if self.users == 0:
                    for param, value in self.off:
                        libc.mallopt(param, value)
                    libc.malloc_trim(0)


_JOB = _Setting(on=((M_MMAP_THRESHOLD, JOB_MMAP_THRESHOLD), (M_TRIM_THRESHOLD, KEEP_ALL)),
                off=((M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD), (M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)))
_HEAP_ONLY = _Setting(on=((M_MMAP_MAX, 0),), off=((M_MMAP_MAX, DEFAULT_MMAP_MAX),))


def return_freed_memory() -> contextlib.AbstractContextManager[None]:
    """A job (nestable, any thread): large blocks mapped from the kernel from a fixed size on, the heap kept
    while it runs; when the last such block ends, all free memory is returned to the kernel."""
    return _JOB.held()


def return_free_memory_if_idle() -> None:
    """Return the heap's free memory to the kernel now, unless a job is running (it would fault it in again)."""
    libc = _glibc()
    if libc is None:
        return
    with _lock:
        if _JOB.users == 0 and _HEAP_ONLY.users == 0:
            libc.malloc_trim(0)


def keep_freed_blocks(when: bool = True) -> contextlib.AbstractContextManager[None]:
    """Sampling, or a large VAE pass (nestable, any thread): every block from the heap, where freed ones are
    reused; when the last such block ends, the free memory is returned. ``when`` False: nothing changes."""
    return _HEAP_ONLY.held() if when else contextlib.nullcontext()
