"""Token merging: A1111's "Token merging ratio" options, applied as A1111 applies tomesd 0.1.3 (``use_rand=False``,
self-attention only, full-resolution blocks only), per job."""

import pytest
import torch
from tomesd.merge import bipartite_soft_matching_random2d

from retouch import Options
from retouch.a1111 import img2img_params
from retouch.models.token_merging import token_merging
from retouch.params import Img2ImgParams, Txt2ImgParams
from retouch.processing import (
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    process_images,
)
from tests.pipeline.helpers import pixels, source_image


def tomesd_block(block, x, context, ratio, size):
    """tomesd's LDM ``ToMeBlock._forward`` (what A1111 runs) in diffusers' names: merge before the self-attention,
    unmerge after it; the matching is on the block's input."""
    h, w = size
    merge, unmerge = bipartite_soft_matching_random2d(x, w, h, 2, 2, int(x.shape[1] * ratio), no_rand=True)
    x = unmerge(block.attn1(merge(block.norm1(x)))) + x
    x = block.attn2(block.norm2(x), encoder_hidden_states=context) + x
    return block.ff(block.norm3(x)) + x


def run_unet(model, ratio, latent_hw=(8, 12), seed=0):
    """One UNet call (batch 2, a non-square latent) under ``ratio``, recording each transformer block's input,
    context and output."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, *latent_hw, generator=gen)
    context = torch.randn(2, 77, model.unet.config.cross_attention_dim, generator=gen)
    seen = []

    def record(block, args, kwargs, output):
        seen.append((block, args[0], kwargs["encoder_hidden_states"], output))

    blocks = [m for m in model.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    hooks = [b.register_forward_hook(record, with_kwargs=True) for b in blocks]
    try:
        with torch.inference_mode(), token_merging(ratio):
            out = model.unet(x, torch.tensor([500.0, 500.0]), encoder_hidden_states=context).sample
    finally:
        for hook in hooks:
            hook.remove()
    return out, seen


def test_full_resolution_blocks_merge_as_tomesd_and_the_others_do_not(bundled_tiny):
    _, seen = run_unet(bundled_tiny, 0.5)
    tokens = 8 * 12
    full = [s for s in seen if s[1].shape[1] == tokens]
    lower = [s for s in seen if s[1].shape[1] < tokens]
    assert full and lower
    with torch.inference_mode():
        for block, x, context, output in full:
            assert torch.equal(output, tomesd_block(block, x, context, 0.5, (8, 12)))
            assert not torch.equal(output, type(block).forward(block, x, encoder_hidden_states=context))
        for block, x, context, output in lower:  # tomesd's max_downsample=1: A1111 leaves them alone
            assert torch.equal(output, type(block).forward(block, x, encoder_hidden_states=context))


def test_ratio_zero_is_diffusers_own_unet_bit_for_bit(bundled_tiny):
    out, _ = run_unet(bundled_tiny, 0.0)
    merged, _ = run_unet(bundled_tiny, 0.3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 12, generator=gen)
    context = torch.randn(2, 77, bundled_tiny.unet.config.cross_attention_dim, generator=gen)
    with torch.inference_mode():
        plain = type(bundled_tiny.unet).forward(bundled_tiny.unet, x, torch.tensor([500.0, 500.0]),
                                                encoder_hidden_states=context).sample
    assert torch.equal(out, plain)
    assert (merged - plain).abs().max() > 1e-4


def img2img(model, **kw):
    settings = dict(prompt="a cat", init_images=[source_image(64, 96)], width=96, height=64, steps=6, seed=5,
                    sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    return StableDiffusionProcessingImg2Img(sd_model=model, **{**settings, **kw})


def test_an_img2img_job_merges_reproducibly_and_says_so(bundled_tiny):
    plain = process_images(img2img(bundled_tiny))
    merged = [process_images(img2img(bundled_tiny, override_settings={"token_merging_ratio_img2img": 0.5}))
              for _ in range(2)]
    assert "Token merging ratio" not in plain.info
    assert "Token merging ratio: 0.5," in merged[0].info and "Token merging ratio hr" not in merged[0].info
    assert (pixels(merged[0].images[0]) == pixels(merged[1].images[0])).all()
    assert (pixels(merged[0].images[0]) != pixels(plain.images[0])).any()
    again = process_images(img2img(bundled_tiny))  # the model is left as it was
    assert (pixels(again.images[0]) == pixels(plain.images[0])).all()


@pytest.mark.parametrize("exact", [True, False])
def test_a_batch_of_two_merges_each_image_as_alone(bundled_tiny, exact):
    """Each image's tokens are matched on their own: with ``deterministic_batches`` a batch is its single runs bit
    for bit, and by default (one call for the batch) up to float rounding, as without merging."""
    settings = {"token_merging_ratio_img2img": 0.5, "deterministic_batches": exact}
    both = process_images(img2img(bundled_tiny, batch_size=2, seed=11, override_settings=settings))
    alone = [process_images(img2img(bundled_tiny, seed=seed, override_settings=settings)) for seed in (11, 12)]
    for i in range(2):
        difference = abs(pixels(both.images[i]).astype(int) - pixels(alone[i].images[0]).astype(int)).max()
        assert difference == 0 if exact else difference <= 1


@pytest.mark.parametrize(("options", "overrides", "first"), [
    ({"token_merging_ratio": 0.2}, None, 0.2),
    ({"token_merging_ratio": 0.2, "token_merging_ratio_img2img": 0.4}, None, 0.4),  # img2img's own option first
    ({"token_merging_ratio_img2img": 0.4}, {"token_merging_ratio": 0.3}, 0.3),  # … unless the request overrides
    ({}, {"token_merging_ratio": 0.0}, 0.0),
    ({"token_merging_ratio": 0.2, "token_merging_ratio_img2img": 0.4}, {"token_merging_ratio": 0.0}, 0.4),
])
def test_img2img_ratio_as_a1111_get_token_merging_ratio(options, overrides, first):
    base = Options().with_settings(options)
    job_options = base.with_overrides(overrides)
    values = {"prompt": "x", "init_images": [source_image()], "override_settings": overrides}
    params = img2img_params(values, base_options=base, api=True)
    assert params.validate(job_options).resolved.token_merging_ratio == first


def test_txt2img_ratios_first_pass_and_hires():
    options = Options().with_overrides({"token_merging_ratio": 0.2, "token_merging_ratio_img2img": 0.7})
    resolved = Txt2ImgParams(enable_hr=True).validate(options).resolved
    assert (resolved.token_merging_ratio, resolved.token_merging_ratio_hr) == (0.2, 0.2)
    resolved = Txt2ImgParams(enable_hr=True).validate(options.with_overrides({"token_merging_ratio_hr": 0.6})).resolved
    assert (resolved.token_merging_ratio, resolved.token_merging_ratio_hr) == (0.2, 0.6)


@pytest.mark.parametrize("bad", [-0.1, 0.95, "half", float("nan")])
def test_a_bad_ratio_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="token_merging_ratio"):
        Img2ImgParams(init_images=[source_image()], token_merging_ratio=bad).validate()


def test_txt2img_hires_writes_both_ratios_and_runs_each_pass_with_its_own(bundled_tiny, monkeypatch):
    from retouch.models import token_merging as tm

    ratios = []
    real = tm._block_forward

    def spy(self, hidden_states, *args, **kwargs):
        ratios.append((hidden_states.shape[1], tm.merging_ratio()))
        return real(self, hidden_states, *args, **kwargs)

    blocks = [m for m in bundled_tiny.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    for block in blocks:
        monkeypatch.setattr(block, "forward", spy.__get__(block))
    p = StableDiffusionProcessingTxt2Img(sd_model=bundled_tiny, prompt="a cat", width=64, height=64, steps=2, seed=1,
                                         enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5,
                                         do_not_save_samples=True, do_not_save_grid=True,
                                         override_settings={"token_merging_ratio": 0.3, "token_merging_ratio_hr": 0.6})
    info = process_images(p).info
    assert "Token merging ratio: 0.3, Token merging ratio hr: 0.6" in info
    first, hires = {r for n, r in ratios if n == 8 * 8}, {r for n, r in ratios if n == 12 * 12}
    assert (first, hires) == ({0.3}, {0.6})
