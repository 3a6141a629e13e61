"""``load_model(..., compile=True)`` / ``--compile``: the UNet compiled by ``torch.compile`` (issue 27).

One compile per input shape for the whole module (compiled code is shared by every model of the same
architecture: the weights are inputs), about a minute on the CI machine."""

from __future__ import annotations

import numpy as np
import pytest
from torch._dynamo.utils import counters

from retouch import Img2ImgParams, generate, load_model
from retouch.models.compiled import inductor_cache_dir
from tests.conftest import MODELS, need_shared
from tests.pipeline.helpers import source_image
from tests.pipeline.test_fast_paths import FAST_PATHS

SD1_CASES = ("002", "004", "005", "016", "019", "127")  # the public 64² reference cases on tiny-sd1 (one shape)


@pytest.fixture(scope="module")
def models():
    need_shared()
    kwargs = {"lora_dir": MODELS / "lora"}
    return load_model(MODELS / "tiny-sd1.safetensors", **kwargs), \
        load_model(MODELS / "tiny-sd1.safetensors", compile=True, **kwargs)


def run(model, prompt: str = "a red cat", **extra) -> np.ndarray:
    params = Img2ImgParams(init_images=[source_image()], prompt=prompt, steps=6, denoising_strength=0.7, seed=11,
                           width=64, height=64, **extra)
    return np.asarray(generate(params, model).images[0].convert("RGB"), dtype=np.int16)


def test_the_compiled_path_stays_within_its_budget_on_the_reference_cases(models):
    path = FAST_PATHS.COMPILED
    row = FAST_PATHS.distances({path: FAST_PATHS.PATHS[path]}, SD1_CASES)[path]
    max_budget, mean_budget = FAST_PATHS.BUDGETS[path]
    assert row["max"] <= max_budget and row["mean"] <= mean_budget, row["cases"]


def test_a_lora_takes_effect_in_the_compiled_unet_without_a_recompile(models):
    eager, compiled = models
    plain = run(compiled)
    graphs = counters["stats"]["unique_graphs"]
    with_lora = run(compiled, "a red cat <lora:tiny_lora_kohya:1>")
    assert counters["stats"]["unique_graphs"] == graphs  # the patched weights are read, not baked in
    assert np.abs(with_lora - plain).max() > 20  # the network does change the picture …
    assert np.abs(with_lora - run(eager, "a red cat <lora:tiny_lora_kohya:1>")).max() <= 2  # … as it does eager
    assert np.array_equal(run(compiled), plain)  # and is taken out again


def test_a_tiling_job_runs_the_unet_uncompiled_and_pads_circularly(models):
    eager, compiled = models
    tiled = run(compiled, tiling=True)
    assert np.array_equal(tiled, run(eager, tiling=True))
    assert np.abs(tiled - run(compiled)).max() > 20


def test_compiled_code_is_kept_in_retouchs_cache_for_the_next_start(models, private_cache):
    run(models[1])
    assert inductor_cache_dir() == str(private_cache / "inductor")
    assert any((private_cache / "inductor" / "fxgraph").rglob("*"))  # Inductor's compiled graphs, on disk
