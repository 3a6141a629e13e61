"""Interrupt lands within one network call in every phase: preparing, encoding, conditioning, sampling,
decoding (tiled or not), saving — and keeps what was finished."""

import pytest
import torch

from retouch import Img2ImgParams, Outputs, generate
from retouch.control import JobControl
from tests.pipeline.helpers import source_image


def params(**kw):
    values = dict(prompt="a cat", negative_prompt="x", init_images=[source_image(seed=i) for i in range(4)],
                  batch_size=4, width=64, height=64, steps=8, seed=3, sampler_name="Euler")
    values.update(kw)
    return Img2ImgParams(**values)


class Counter:
    """Wraps a model method; sets ``control.interrupted`` once it has been called ``after`` times."""

    def __init__(self, monkeypatch, model, name, control, after):
        self.calls, self.control, self.after = 0, control, after
        real = getattr(model, name)

        def counted(*args, **kwargs):
            self.calls += 1
            out = real(*args, **kwargs)
            if self.calls == self.after:
                control.interrupted = True
            return out

        monkeypatch.setattr(model, name, counted)


@pytest.mark.parametrize("phase", ["encode_first_stage", "encode_prompts"])
def test_interrupt_before_sampling_stops_at_the_next_call(bundled_tiny, monkeypatch, phase):
    control = JobControl()
    counter = Counter(monkeypatch, bundled_tiny, phase, control, after=1)
    unet = Counter(monkeypatch, bundled_tiny, "apply_model", JobControl(), after=-1)
    result = generate(params(), bundled_tiny, control=control)
    assert counter.calls == 1 and unet.calls == 0 and result.images == []
    assert len(result.infotexts) == 1  # A1111 still answers with the job's infotext


def test_interrupt_during_sampling_decodes_one_partial_image(bundled_tiny, monkeypatch):
    control = JobControl()
    unet = Counter(monkeypatch, bundled_tiny, "apply_model", control, after=2)
    decode = Counter(monkeypatch, bundled_tiny, "decode_first_stage", JobControl(), after=-1)
    result = generate(params(n_iter=2), bundled_tiny, control=control)
    assert unet.calls == 2  # one call per step for the whole batch: none after the flag
    assert decode.calls == 1 and len(result.images) == 1 and result.interrupted


def test_interrupt_during_decoding_keeps_the_finished_images(bundled_tiny, monkeypatch, tmp_path):
    control = JobControl()
    Counter(monkeypatch, bundled_tiny, "decode_first_stage", control, after=2)
    outputs = Outputs(samples_dir=tmp_path)
    result = generate(params(), bundled_tiny, control=control, outputs=outputs)
    # what was decoded is finished and saved (and a grid of the two made); the third decode stops at its check
    assert len(result.images) - result.index_of_first_image == 2
    assert [p.name for p in outputs.files] == ["00000-3.png", "00001-4.png"]
    assert sorted(tmp_path.iterdir()) == outputs.files


def test_an_interrupted_jobs_partial_image_is_saved_and_returned(bundled_tiny, monkeypatch, tmp_path):
    control = JobControl()
    Counter(monkeypatch, bundled_tiny, "apply_model", control, after=2)
    outputs = Outputs(samples_dir=tmp_path)
    result = generate(params(batch_size=1, init_images=[source_image()]), bundled_tiny, control=control,
                      outputs=outputs)
    assert len(result.images) == 1 and result.interrupted  # as A1111 (and as without saving)
    assert [p.name for p in outputs.files] == ["00000-3.png"]


def test_interrupt_between_vae_tiles(bundled_tiny, monkeypatch):
    control = JobControl()
    bundled_tiny.vae_tiling, bundled_tiny.vae_tile_size = "always", 256  # 512² image: 2×2 tiles of 256 px
    try:
        vae = bundled_tiny.vae
        calls = {"n": 0}
        real = vae.encode

        def encode(x):
            calls["n"] += 1
            control.interrupted = True
            return real(x)

        monkeypatch.setattr(vae, "encode", encode)
        result = generate(params(init_images=[source_image(512, 512)], batch_size=1, width=512, height=512),
                          bundled_tiny, control=control)
    finally:
        bundled_tiny.vae_tiling, bundled_tiny.vae_tile_size = "auto", None
    assert calls["n"] == 1 and result.images == []


def test_skip_ends_the_batch_but_not_the_job(bundled_tiny, monkeypatch):
    control = JobControl()
    unet_calls = []
    real = bundled_tiny.apply_model

    def unet(*args, **kwargs):
        unet_calls.append(control.job_no)
        if len(unet_calls) == 2:
            control.skipped = True
        return real(*args, **kwargs)

    monkeypatch.setattr(bundled_tiny, "apply_model", unet)
    result = generate(params(n_iter=2, batch_size=1, init_images=[source_image()]), bundled_tiny, control=control)
    assert unet_calls.count(0) == 2 and unet_calls.count(1) == 7  # batch 0 cut short, batch 1 whole (ds 0.75·8+1)
    assert len(result.images) == 3 and result.index_of_first_image == 1  # grid + both images
    assert not torch.equal(result.latents[0], result.latents[1])


class ConvTrigger:
    """Counts the convolutions of ``network`` that ran; calls ``act()`` once ``after`` of them have."""

    def __init__(self, network: torch.nn.Module, after: int, act):
        self.ran, self.after, self.act = 0, after, act
        self.handles = [m.register_forward_hook(self._ran) for m in network.modules()
                        if isinstance(m, torch.nn.Conv2d)]

    def _ran(self, *_):
        self.ran += 1
        if self.ran == self.after:
            self.act()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def one_image(**kw):
    return params(batch_size=1, init_images=[source_image()], **kw)


def test_interrupt_lands_within_one_convolution_of_a_vae_pass(bundled_tiny):
    # a 2048² encode is one network call of ~12 s on the tiny model: the job must not wait for it to end
    control = JobControl()
    trigger = ConvTrigger(bundled_tiny.vae.encoder, 3, control.interrupt)
    try:
        result = generate(one_image(), bundled_tiny, control=control)
    finally:
        trigger.remove()
    assert trigger.ran == 3 and result.images == []  # the 4th convolution of the encode did not run


def test_interrupt_lands_within_one_convolution_of_a_unet_call(bundled_tiny, monkeypatch):
    control = JobControl()
    calls = Counter(monkeypatch, bundled_tiny, "apply_model", JobControl(), after=-1)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in bundled_tiny.unet.modules())
    trigger = ConvTrigger(bundled_tiny.unet, convs + 2, control.interrupt)  # inside the second UNet call
    try:
        result = generate(one_image(), bundled_tiny, control=control)
    finally:
        trigger.remove()
    assert calls.calls == 2 and trigger.ran == convs + 2
    assert len(result.images) == 1 and result.interrupted  # the partial image, from the first step's prediction


def test_a_second_interrupt_stops_the_partial_images_decode(bundled_tiny):
    control = JobControl()
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in bundled_tiny.unet.modules())
    sampling = ConvTrigger(bundled_tiny.unet, convs + 2, control.interrupt)  # the first: sampling stops …
    decoding = ConvTrigger(bundled_tiny.vae.decoder, 2, control.interrupt)  # … the second: so does the decode
    try:
        result = generate(one_image(), bundled_tiny, control=control)
    finally:
        sampling.remove()
        decoding.remove()
    assert decoding.ran == 2 and result.images == [] and result.interrupted
