"""How close this CPU's float arithmetic can come to the oracle's.

The oracle (A1111's outputs and tensors) was recorded, and the oracle tests' bounds were measured, on CPUs with
AVX-512: there oneDNN's, MKL's and ATen's kernels sum in the order they did for A1111, and a network's output is
the oracle's bit for bit or within a few float roundings. A CPU without it (AVX2 only) runs other kernels, which
sum in other orders: the same fp32 arithmetic lands a few more roundings away, and A1111 itself would give this
CPU's numbers there. On such a host the tests hold the bounds measured on one (``other``); they stay orders of
magnitude below what a wrong formula, weight or rounding rule gives.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

ORACLE_KERNELS = torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def bound(oracle: T, other: T) -> T:
    """``oracle`` on a CPU with the oracle's kernels, ``other`` elsewhere."""
    return oracle if ORACLE_KERNELS else other


def assert_oracle_pixels(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Equal to the oracle's pixels: exactly with the oracle's kernels; elsewhere one float rounding apart at most
    (1 level, on at most 0.1 % of the values)."""
    ours, theirs = np.asarray(ours).astype(int), np.asarray(theirs).astype(int)
    assert ours.shape == theirs.shape
    if ORACLE_KERNELS:
        assert np.array_equal(ours, theirs)
        return
    differ = np.abs(ours - theirs)
    assert differ.max() <= 1 and np.count_nonzero(differ) <= 0.001 * differ.size, (differ.max(),
                                                                                     np.count_nonzero(differ))
