"""Weights cast into new memory (huge pages where Linux allows): exact values, never a view of the source."""

import mmap

import pytest
import torch

from retouch.models import weights_memory
from retouch.models.weights_memory import MIN_BYTES, cast_copy, empty_weight


@pytest.mark.parametrize("numel", [7, MIN_BYTES // 2 + 3])  # below and above the huge-page threshold (fp32)
@pytest.mark.parametrize("source, target", [(torch.float16, torch.float32), (torch.float32, torch.bfloat16),
                                            (torch.bfloat16, torch.bfloat16)])
def test_cast_copy_equals_to_and_owns_its_memory(numel, source, target):
    tensor = torch.randn(numel, generator=torch.Generator().manual_seed(numel)).to(source)
    copy = cast_copy(tensor, target)
    assert copy.dtype == target and copy.shape == tensor.shape
    assert torch.equal(copy, tensor.to(target))
    tensor.fill_(3)  # the source changes (or its file mapping goes): the copy does not
    assert not torch.equal(copy, tensor.to(target))


def test_large_weights_are_advised_page_aligned_and_inside_the_tensor(monkeypatch):
    calls = []
    monkeypatch.setattr(weights_memory, "_madvise", lambda: lambda start, length, advice: calls.append(
        (start, length, advice)) or 0)
    small = empty_weight((MIN_BYTES // 4 - 1,), torch.float32)
    assert calls == []
    large = empty_weight((3, MIN_BYTES // 4), torch.float32)
    assert large.shape == (3, MIN_BYTES // 4) and small.numel() == MIN_BYTES // 4 - 1
    [(start, length, advice)] = calls
    assert advice == weights_memory.MADV_HUGEPAGE
    assert start % mmap.PAGESIZE == 0 and length % mmap.PAGESIZE == 0
    assert large.data_ptr() <= start < large.data_ptr() + mmap.PAGESIZE
    assert start + length <= large.data_ptr() + large.numel() * 4
