"""The faster paths (bf16, bf16 VAE, channels-last, upcast_attn) stay within the distance from the default path
that docs/benchmarks.md states, on every public reference case they apply to (``bench/fast_paths.py``)."""

import importlib.util

import pytest

from tests.conftest import REPO, need_shared


def fast_paths():
    spec = importlib.util.spec_from_file_location("fast_paths", REPO / "bench" / "fast_paths.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def measured():
    need_shared()
    module = fast_paths()
    return module, module.distances()


def test_every_path_has_a_stated_budget():
    module = fast_paths()
    assert set(module.PATHS) == set(module.BUDGETS)


@pytest.mark.parametrize("path", list(fast_paths().PATHS))
def test_path_stays_within_its_budget(measured, path):
    module, found = measured
    row, (max_budget, mean_budget) = found[path], module.BUDGETS[path]
    assert row["max"] <= max_budget and row["mean"] <= mean_budget, row["cases"]
    if path != "fp32, channels-last":  # a lower precision does change the pictures: the comparison is live
        assert row["max"] > 0
