"""Memory for a model's weights: large tensors backed by transparent huge pages where Linux allows it.

Casting a checkpoint's tensors into new memory is dominated by page faults: every 4 KiB page of the
new copy is faulted in and zeroed once. Asking for huge pages (``MADV_HUGEPAGE``) before the first
write makes that 512× fewer faults; an SDXL load in fp32 goes from about 8 s of casting to about 5 s
(``bench/run.py --sections sdxl``). The advice changes nothing else: where it is unsupported or refused,
the memory stays in ordinary pages. PyTorch's own switch (``THP_MEM_ALLOC_ENABLE``) is read once when
torch starts, so a library cannot turn it on for its callers.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Callable
from functools import lru_cache

import torch

MADV_HUGEPAGE = 14  # linux/mman.h
MIN_BYTES = 4 << 20  # below two huge pages there is nothing to gain


@lru_cache(maxsize=1)
def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def empty_weight(shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor for a weight, in huge pages when it is large enough and Linux allows it."""
    tensor = torch.empty(shape, dtype=dtype)
    nbytes = tensor.numel() * tensor.element_size()
    madvise = _madvise()
    if madvise is not None and nbytes >= MIN_BYTES:
        page = mmap.PAGESIZE
        start = -(-tensor.data_ptr() // page) * page  # advice must start on a page boundary
        end = (tensor.data_ptr() + nbytes) // page * page
        madvise(start, end - start, MADV_HUGEPAGE)  # advice only: a refusal leaves ordinary pages
    return tensor


def cast_copy(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A new CPU copy of ``tensor`` in ``dtype`` (never a view of the source)."""
    if tensor.device.type != "cpu":
        return tensor.to(dtype, copy=True)
    copy = empty_weight(tensor.shape, dtype)
    copy.copy_(tensor)
    return copy
