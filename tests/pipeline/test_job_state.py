"""No job state on shared objects: jobs with different options, seamless tiling and noise sources run in
two threads at once and give exactly the pixels they give alone; a failed job leaves nothing behind."""

import threading

import numpy as np
import pytest
import torch

from retouch import Img2ImgParams, Options, generate
from tests.pipeline.helpers import pixels, source_image

JOB_A = dict(params=dict(prompt="a cat", tiling=True, sampler_name="DPM++ SDE", steps=12, seed=1),
             options=dict(randn_source="NV", CLIP_stop_at_last_layers=2))
JOB_B = dict(params=dict(prompt="a dog", tiling=False, sampler_name="DPM++ 2M SDE", steps=12, seed=2),
             options=dict(randn_source="CPU", emphasis="No norm"))


def run(model, job):
    p = Img2ImgParams(init_images=[source_image()], width=64, height=64, **job["params"])
    return pixels(generate(p, model, options=Options(**job["options"])).images[0])


def conv_state(model):
    return [(layer.padding_mode, layer._conv_forward.__func__.__name__)
            for net in (model.unet, model.vae) for layer in net.modules() if isinstance(layer, torch.nn.Conv2d)]


def test_two_jobs_in_two_threads_give_their_own_pixels(bundled_tiny):
    alone = {"a": run(bundled_tiny, JOB_A), "b": run(bundled_tiny, JOB_B)}
    assert not np.array_equal(alone["a"], alone["b"])
    results: dict[str, list] = {"a": [], "b": []}
    errors: list[Exception] = []
    barrier = threading.Barrier(2)

    def worker(name, job):
        try:
            barrier.wait()
            for _ in range(4):  # overlap the two jobs many times over
                results[name].append(run(bundled_tiny, job))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=("a", JOB_A)), threading.Thread(target=worker, args=("b", JOB_B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    for name in ("a", "b"):
        assert len(results[name]) == 4 and all(np.array_equal(image, alone[name]) for image in results[name]), name


def test_tiling_changes_the_pixels_but_not_the_model(bundled_tiny):
    before = conv_state(bundled_tiny)
    tiled = run(bundled_tiny, {"params": {**JOB_A["params"], "tiling": True}, "options": {}})
    plain = run(bundled_tiny, {"params": {**JOB_A["params"], "tiling": False}, "options": {}})
    assert not np.array_equal(tiled, plain)
    assert conv_state(bundled_tiny) == before and all(mode == "zeros" for mode, _ in before)


def test_a_failing_tiling_job_leaves_no_state_behind(bundled_tiny, monkeypatch):
    job = {"params": {**JOB_B["params"], "tiling": False}, "options": {}}
    reference = run(bundled_tiny, job)
    real = bundled_tiny.apply_model
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(bundled_tiny, "apply_model", failing)
    with pytest.raises(RuntimeError, match="boom"):
        run(bundled_tiny, {"params": {**JOB_B["params"], "tiling": True}, "options": {}})
    monkeypatch.undo()
    assert np.array_equal(run(bundled_tiny, job), reference)


def test_the_model_carries_no_job_notes(bundled_tiny):
    assert not hasattr(bundled_tiny, "notes")
    p = Img2ImgParams(init_images=[source_image()], width=64, height=64, steps=3, prompt="x")
    bundled_tiny.vae_memory_budget = 1  # every VAE pass is "too big": tiled, and the job is told
    try:
        result = generate(p, bundled_tiny)
    finally:
        bundled_tiny.vae_memory_budget = None
    assert any(c.startswith("Tiled VAE encode") for c in result.comments)
    assert any(c.startswith("Tiled VAE decode") for c in result.comments)
