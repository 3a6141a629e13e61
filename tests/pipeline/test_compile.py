"""``load_model(..., compile=True | "freeze")`` / ``--compile [freeze]``: the UNet compiled by AOTInductor into a
package on disk, the model's own weights attached or frozen in (issue 27). Each compile takes tens of seconds on
the CI machine: the module compiles few input shapes (the session's cache folder is shared)."""

from __future__ import annotations

import gc
import logging
import weakref
import zipfile

import numpy as np
import pytest
import torch

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


def test_a_job_with_a_lora_runs_the_live_package_with_the_networks_in_its_weights(models, monkeypatch):
    """Live code takes the weights as they are at the call: a job whose networks are swapped into the weights
    runs compiled (without compiling again), with the networks' effect, and the next job without them gets the
    plain weights back."""
    eager, compiled = models
    calls: list[int] = []
    real_call = frozen.LiveWeights.__call__
    monkeypatch.setattr(frozen.LiveWeights, "__call__", lambda self, *a: calls.append(1) or real_call(self, *a))
    plain = run(compiled)
    packages = frozen.packaged_unet(compiled.unet, freeze=False)
    shapes, plain_calls = packages.shapes, len(calls)
    lora = "a red cat <lora:tiny_lora_kohya:1>"
    with_lora = run(compiled, lora)
    assert plain_calls > 0 and len(calls) == 2 * plain_calls  # every UNet call of the job ran compiled …
    assert packages.shapes == shapes  # … on the package it had
    assert np.abs(with_lora - plain).max() > 20  # the network does change the picture …
    assert np.abs(with_lora - run(eager, lora)).max() <= FAST_PATHS.BUDGETS[FAST_PATHS.COMPILED][0]  # … as eager
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


def test_live_packages_hold_no_weights_and_serve_every_checkpoint_of_the_architecture(models, private_cache,
                                                                                      monkeypatch, caplog):
    """``compile=True``: the package in retouch's cache holds the compiled code only; a second checkpoint of the
    same architecture runs the same package with its own weights, and a replaced parameter is attached anew."""
    caplog.set_level(logging.INFO, logger="retouch.models.frozen")
    run(models[1])
    assert inductor_cache_dir() == str(private_cache / "inductor")
    weights = {p.name: [n for n in zipfile.ZipFile(p).namelist() if "weights" in n]
               for p in (private_cache / "aoti").glob("*.pt2")}
    assert [] in weights.values()  # the live package holds no weights (frozen ones: a "wrapper_weights.blob")
    monkeypatch.setattr(frozen, "build_package", lambda *args: pytest.fail("compiled again"))
    eager_b, live_b = (load_model(MODELS / "tiny-sd1-b.safetensors", compile=mode) for mode in (False, True))
    b = run(live_b)
    assert np.abs(b - run(eager_b)).max() <= FAST_PATHS.BUDGETS[FAST_PATHS.COMPILED][0]
    assert np.abs(b - run(models[1])).max() > 20  # its own weights, not the first model's
    for model in (eager_b, live_b):  # a new tensor in the module's place (a .to(), an assignment)
        weight = model.unet.conv_in.weight
        model.unet.conv_in.weight = torch.nn.Parameter(weight.detach() * 0.5, requires_grad=False)
    changed = run(live_b)
    assert np.abs(changed - run(eager_b)).max() <= FAST_PATHS.BUDGETS[FAST_PATHS.COMPILED][0]
    assert np.abs(changed - b).max() > 20
    assert "could not be compiled" not in caplog.text  # all of it ran compiled, none fell back to eager
    assert "loaded the live UNet" in caplog.text


@pytest.mark.parametrize("mode", ["freeze", True])
def test_the_next_start_loads_the_packages_instead_of_compiling(private_cache, monkeypatch, caplog, mode):
    """Packages of tiny-sd1-b for two input shapes (made by the tests above, or here) are found by a model loaded
    afresh — their keys are the weights' contents (frozen) or layout (live), not the object, and nothing a
    compile leaves behind — and only a new input shape compiles a package of its own."""
    need_shared()
    kinds = {"one": {}, "two": {"batch_size": 2}}
    first = load_model(MODELS / "tiny-sd1-b.safetensors", compile=mode)
    pictures = {kind: run(first, **extra) for kind, extra in kinds.items()}
    assert len(list((private_cache / "aoti").glob("*.pt2"))) >= 2
    built = []

    def no_compile(call, args, path, config):
        built.append([tuple(a.shape) for a in args])
        raise AssertionError("compiled again")

    monkeypatch.setattr(frozen, "build_package", no_compile)
    again = load_model(MODELS / "tiny-sd1-b.safetensors", compile=mode)  # a restart, as far as keys go
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


@pytest.mark.parametrize("mode", ["freeze", True])
def test_a_compiled_model_let_go_takes_its_packages_and_weights_with_it(private_cache, mode):
    need_shared()
    model = load_model(MODELS / "tiny-sd1-b.safetensors", compile=mode)
    run(model)
    packages = weakref.ref(frozen.packaged_unet(model.unet, freeze=mode == "freeze"))
    weight = weakref.ref(model.unet.conv_in.weight)
    del model
    gc.collect()
    assert weight() is None and packages() is None  # the compiled code and the weights go with their holder


def test_an_sdxl_unet_freezes_with_its_pooled_vector_input(private_cache, caplog):
    """SDXL's UNet takes a fourth input (the pooled text and size vector): its package is made and used."""
    need_shared()
    before = set((private_cache / "aoti").glob("*.pt2"))
    with caplog.at_level(logging.WARNING, logger="retouch.models.frozen"):
        frozen_xl = run(load_model(MODELS / "tiny-sdxl.safetensors", compile="freeze"))
    assert "could not be compiled" not in caplog.text
    assert len(set((private_cache / "aoti").glob("*.pt2")) - before) == 1
    assert np.abs(frozen_xl - run(load_model(MODELS / "tiny-sdxl.safetensors"))).max() <= 2
