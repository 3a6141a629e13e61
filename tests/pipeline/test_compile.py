"""``load_model(..., compile=True | "freeze")`` / ``--compile [freeze]``: the UNet compiled by ``torch.compile`` or,
weights frozen in, by AOTInductor into a package on disk (issue 27). Each compile takes tens of seconds on the CI
machine: the module compiles one input shape per mode and checkpoint."""

from __future__ import annotations

import gc
import logging
import weakref

import numpy as np
import pytest
from torch._dynamo.utils import counters

from retouch import Img2ImgParams, generate, load_model
from retouch.models import frozen
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


@pytest.mark.parametrize("path", [FAST_PATHS.COMPILED, FAST_PATHS.FROZEN])
def test_the_compiled_paths_stay_within_their_budgets_on_the_reference_cases(models, path):
    row = FAST_PATHS.distances({path: FAST_PATHS.PATHS[path]}, SD1_CASES)[path]
    max_budget, mean_budget = FAST_PATHS.BUDGETS[path]
    assert row["max"] <= max_budget and row["mean"] <= mean_budget, row["cases"]


def test_a_job_with_a_lora_runs_the_eager_unet_and_the_next_job_the_compiled_one_again(models):
    """The compiled code has the loaded weights frozen in: a job whose networks are in the weights must not use
    it (nor make it compile again), and gets exactly the eager model's pictures."""
    eager, compiled = models
    plain = run(compiled)
    graphs = counters["stats"]["unique_graphs"]
    with_lora = run(compiled, "a red cat <lora:tiny_lora_kohya:1>")
    assert counters["stats"]["unique_graphs"] == graphs
    assert np.abs(with_lora - plain).max() > 20  # the network does change the picture …
    assert np.array_equal(with_lora, run(eager, "a red cat <lora:tiny_lora_kohya:1>"))  # … exactly as eager
    assert np.array_equal(run(compiled), plain)  # and is taken out again


def test_frozen_weights_are_each_models_own(models, private_cache):
    """A second model of the same architecture, compiled with its weights frozen in, runs with its own."""
    eager_b, frozen_b = (load_model(MODELS / "tiny-sd1-b.safetensors", compile=mode, lora_dir=MODELS / "lora")
                         for mode in (False, "freeze"))
    b = run(frozen_b)
    assert np.abs(b - run(eager_b)).max() <= FAST_PATHS.BUDGETS[FAST_PATHS.FROZEN][0]
    assert np.abs(b - run(models[1])).max() > 20  # not the first model's weights
    lora = "a red cat <lora:tiny_lora_kohya:1>"
    assert np.array_equal(run(frozen_b, lora), run(eager_b, lora))  # networks: the eager UNet, exactly
    assert np.array_equal(run(frozen_b), b)  # and the frozen one again


def test_a_tiling_job_runs_the_unet_uncompiled_and_pads_circularly(models):
    eager, compiled = models
    tiled = run(compiled, tiling=True)
    assert np.array_equal(tiled, run(eager, tiling=True))
    assert np.abs(tiled - run(compiled)).max() > 20


def test_compiled_code_is_kept_in_retouchs_cache_for_the_next_start(models, private_cache):
    run(models[1])
    assert inductor_cache_dir() == str(private_cache / "inductor")
    assert any((private_cache / "inductor").rglob("*.so"))  # Inductor's compiled kernels, on disk


def test_the_next_start_loads_the_frozen_packages_instead_of_compiling(private_cache, monkeypatch, caplog):
    """Packages of tiny-sd1-b for two input shapes (made by the test above, or here) are found by a model loaded
    afresh — their keys are the weights' contents, not the object, and nothing a compile leaves behind — and only
    a new input shape compiles a package of its own."""
    need_shared()
    kinds = {"one": {}, "two": {"batch_size": 2}}
    first = load_model(MODELS / "tiny-sd1-b.safetensors", compile="freeze")
    pictures = {kind: run(first, **extra) for kind, extra in kinds.items()}
    assert len(list((private_cache / "aoti").glob("*.pt2"))) >= 2
    built = []

    def no_compile(call, args, path):
        built.append([tuple(a.shape) for a in args])
        raise AssertionError("compiled again")

    monkeypatch.setattr(frozen, "build_package", no_compile)
    again = load_model(MODELS / "tiny-sd1-b.safetensors", compile="freeze")  # a restart, as far as keys go
    for kind, extra in kinds.items():
        assert np.array_equal(run(again, **extra), pictures[kind])
    run(again, prompt="a red cat " + "on a mat " * 20)  # a longer prompt, the same 77 tokens: no compile either
    assert built == []
    plain = run(load_model(MODELS / "tiny-sd1-b.safetensors"), batch_size=3)
    with caplog.at_level(logging.WARNING, logger="retouch.models.frozen"):
        tripled = run(again, batch_size=3)  # a new input shape: compiles (here: fails, and runs eager)
    assert built[0][0] == (6, 4, 8, 8)
    assert "could not be compiled" in caplog.text
    assert np.array_equal(tripled, plain)  # a compiler failure costs neither the job nor its exactness


def test_a_frozen_model_let_go_takes_its_compiled_weights_with_it(private_cache):
    need_shared()
    model = load_model(MODELS / "tiny-sd1-b.safetensors", compile="freeze")
    run(model)
    packages = weakref.ref(frozen.frozen_unet(model.unet))
    weight = weakref.ref(model.unet.conv_in.weight)
    del model
    gc.collect()
    assert weight() is None and packages() is None  # the compiled packages' weights go with their holder


def test_a_compiled_model_let_go_is_freed_by_the_next_compiled_load():
    need_shared()
    first = load_model(MODELS / "tiny-sd1-b.safetensors", compile=True)
    run(first)
    weight = weakref.ref(first.unet.conv_in.weight)
    del first
    second = load_model(MODELS / "tiny-sd1-b.safetensors", compile=True)  # a server's checkpoint switch
    assert weight() is None
    assert np.abs(run(second) - run(load_model(MODELS / "tiny-sd1-b.safetensors"))).max() <= 2


def test_an_sdxl_unet_freezes_with_its_pooled_vector_input(private_cache, caplog):
    """SDXL's UNet takes a fourth input (the pooled text and size vector): its package is made and used."""
    need_shared()
    before = set((private_cache / "aoti").glob("*.pt2"))
    with caplog.at_level(logging.WARNING, logger="retouch.models.frozen"):
        frozen_xl = run(load_model(MODELS / "tiny-sdxl.safetensors", compile="freeze"))
    assert "could not be compiled" not in caplog.text
    assert len(set((private_cache / "aoti").glob("*.pt2")) - before) == 1
    assert np.abs(frozen_xl - run(load_model(MODELS / "tiny-sdxl.safetensors"))).max() <= 2
