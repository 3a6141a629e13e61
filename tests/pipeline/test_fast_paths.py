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


FAST_PATHS = fast_paths()
TESTED_HERE = {name: path for name, path in FAST_PATHS.PATHS.items()
               if name not in (FAST_PATHS.COMPILED, FAST_PATHS.FROZEN)}  # those: test_compile.py


@pytest.fixture(scope="module")
def measured():
    need_shared()
    return FAST_PATHS.distances(TESTED_HERE)


def test_every_path_has_a_stated_budget():
    assert set(FAST_PATHS.PATHS) == set(FAST_PATHS.BUDGETS)


@pytest.mark.parametrize("path", list(TESTED_HERE))
def test_path_stays_within_its_budget(measured, path):
    row, (max_budget, mean_budget) = measured[path], FAST_PATHS.BUDGETS[path]
    assert row["max"] <= max_budget and row["mean"] <= mean_budget, row["cases"]
    if not path.startswith("fp32"):  # a lower precision does change the pictures: the comparison is live
        assert row["max"] > 0
