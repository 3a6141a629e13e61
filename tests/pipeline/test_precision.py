"""bf16 / channels-last / tiled VAE paths: bounded deviation from fp32, no seams, NaN fallback."""

import numpy as np
import pytest
import torch

from retouch import load_model
from retouch.control import JobHooks
from retouch.models.model import vae_pass_bytes
from retouch.processing import StableDiffusionProcessingImg2Img, process_images
from tests.pipeline.helpers import pixels, source_image


def run(model, **kw):
    p = StableDiffusionProcessingImg2Img(sd_model=model, prompt="a cat", init_images=[source_image(128, 128)],
                                         width=128, height=128, steps=8, seed=5, sampler_name="Euler", **kw)
    return process_images(p)


@pytest.fixture(scope="module")
def fp32():
    return load_model("tiny")


def test_bf16_unet_stays_close_to_fp32(fp32):
    bf16 = load_model("tiny", dtype=torch.bfloat16, channels_last=True)
    assert bf16.unet.dtype == torch.bfloat16 and bf16.vae.dtype == torch.float32  # VAE fp32 by default on CPU
    a, b = pixels(run(fp32).images[0]), pixels(run(bf16).images[0])
    diff = np.abs(a - b)
    assert 0 < diff.mean() < 8 and diff.max() < 80


def test_bf16_vae(fp32):
    model = load_model("tiny", vae_dtype=torch.bfloat16)
    assert model.vae.dtype == torch.bfloat16
    diff = np.abs(pixels(run(fp32).images[0]) - pixels(run(model).images[0]))
    assert diff.mean() < 8


def test_bad_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be"):
        load_model("tiny", dtype=torch.int8)


def test_tiled_decode_matches_untiled_without_seams(fp32):
    z = torch.randn(1, 4, 96, 96, generator=torch.Generator().manual_seed(0))
    fp32.vae_tiling = "never"
    whole = fp32.decode_first_stage(z)
    fp32.vae_tiling, fp32.vae_tile_size = "always", 512  # 2×2 tiles of 448 px over the 768² image
    tiled = fp32.decode_first_stage(z)
    fp32.vae_tiling, fp32.vae_tile_size = "auto", None
    delta = ((whole - tiled).abs() * 127.5)
    assert delta.mean() < 4  # 8-bit levels, over the whole 768² image
    # no seam: differences along the tile borders are not larger than elsewhere by much
    rows = delta.mean(dim=(0, 1, 3))
    assert rows.max() < 6 * rows.mean() + 1


def test_auto_tiles_only_what_would_not_fit(fp32, monkeypatch):
    calls = []
    real = fp32._run_vae
    monkeypatch.setattr(fp32, "_run_vae", lambda fn, x, decode, tiled, budget, hooks: calls.append(tiled)
                        or real(fn, x, decode, tiled, budget, hooks))
    small = vae_pass_bytes(fp32.vae.config.block_out_channels, torch.float32, 64 * 64, decode=False)
    fp32.vae_memory_budget = small * 2
    notes = []
    hooks = JobHooks(note=notes.append)
    fp32.encode_first_stage(torch.zeros(1, 3, 64, 64), hooks)
    assert calls == [False] and notes == []
    fp32.encode_first_stage(torch.zeros(1, 3, 128, 128), hooks)  # 4× the pixels: over the budget
    assert calls == [False, True] and notes[-1].startswith("Tiled VAE encode: an untiled pass needs about")
    fp32.decode_first_stage(torch.zeros(1, 4, 16, 16), hooks)
    assert calls[-1] is True and "Tiled VAE decode" in notes[-1]
    fp32.vae_memory_budget = None  # 3/4 of this machine's free memory: a small image is never tiled
    fp32.encode_first_stage(torch.zeros(1, 3, 64, 64), hooks)
    assert calls[-1] is False and len(notes) == 2


def test_memory_estimate_for_sd_vae():
    sd_vae = (128, 256, 512, 512)
    mp = 1024 * 1024
    decode_1mp = vae_pass_bytes(sd_vae, torch.float32, mp, decode=True)
    # measured: an untiled fp32 1024² decode adds ~4 GB to the process; the estimate has a 1.5× margin
    assert 5e9 < decode_1mp < 8e9
    assert vae_pass_bytes(sd_vae, torch.float32, 4 * mp, decode=True) == 4 * decode_1mp
    assert vae_pass_bytes(sd_vae, torch.bfloat16, mp, decode=True) == decode_1mp // 2
    assert vae_pass_bytes(sd_vae, torch.float32, mp, decode=False) < decode_1mp


def test_nan_decode_falls_back_to_fp32(monkeypatch):
    model = load_model("tiny", vae_dtype=torch.bfloat16)
    real = type(model.vae).decode

    def nan_in_bf16(self, z, *a, **k):
        out = real(self, z, *a, **k)
        if self.dtype == torch.bfloat16:
            out.sample[:] = float("nan")
        return out

    monkeypatch.setattr(type(model.vae), "decode", nan_in_bf16)
    processed = run(model)
    assert model.vae.dtype == torch.float32 and "converted to 32-bit float" in processed.comments
    assert pixels(processed.images[0]).std() > 0


def test_channels_last_puts_unet_and_vae_convolutions_in_channels_last_without_changing_pixels(fp32):
    model = load_model("tiny", channels_last=True)
    for net in (model.unet, model.vae):
        weights = [p for p in net.parameters() if p.dim() == 4 and p.shape[-1] > 1]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
        assert not all(p.is_contiguous() for p in weights)
    diff = np.abs(pixels(run(fp32).images[0]) - pixels(run(model).images[0]))
    assert diff.max() <= 1  # only the convolution kernels' summation order differs
