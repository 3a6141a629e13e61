"""Soft inpainting through generate() and the facade, on the bundled tiny models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retouch.options import Options
from retouch.params import Img2ImgParams
from retouch.pipeline import generate
from retouch.processing import StableDiffusionProcessingImg2Img, process_images
from retouch.soft_inpainting import SoftInpainting
from tests.pipeline.helpers import pixels, source_image


def mask(w=64, h=64, box=(16, 16, 44, 40)):
    image = Image.new("L", (w, h), 0)
    ImageDraw.Draw(image).rectangle(box, fill=255)
    return image


def params(**kw):
    base = dict(prompt="a cat", init_images=[source_image()], image_mask=mask(), width=64, height=64, steps=8,
                denoising_strength=0.7, seed=5, sampler_name="Euler", mask_blur_x=4, mask_blur_y=4,
                soft_inpainting=SoftInpainting())
    base.update(kw)
    return Img2ImgParams(**base)


def test_infotext_keys_come_before_mask_blur_and_mask_is_not_rounded(bundled_tiny):
    result = generate(params(), bundled_tiny)
    text = result.infotexts[0]
    assert ("Denoising strength: 0.7, Soft inpainting enabled: True, Soft inpainting schedule bias: 1, "
            "Soft inpainting preservation strength: 0.5, Soft inpainting transition contrast boost: 4, "
            "Soft inpainting mask influence: 0, Soft inpainting difference threshold: 0.5, "
            "Soft inpainting difference contrast: 2, Mask blur: 4") in text
    repaint = result.init.blend.repaint
    assert ((repaint > 0) & (repaint < 1)).any()  # the blurred edge keeps its grey levels
    rounded = generate(params(soft_inpainting=None), bundled_tiny).init.blend.repaint
    assert set(rounded.unique().tolist()) <= {0.0, 1.0}


def test_it_changes_the_result_and_does_nothing_without_a_mask(bundled_tiny):
    soft = generate(params(), bundled_tiny).images[0]
    hard = generate(params(soft_inpainting=None), bundled_tiny).images[0]
    assert np.abs(pixels(soft) - pixels(hard)).max() > 5
    plain = generate(params(image_mask=None, soft_inpainting=None), bundled_tiny)
    no_mask = generate(params(image_mask=None), bundled_tiny)
    assert "Soft inpainting" not in no_mask.infotexts[0]
    assert np.array_equal(pixels(no_mask.images[0]), pixels(plain.images[0]))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM", "UniPC", "PLMS"])
def test_every_kind_of_sampler(bundled_tiny, sampler):
    result = generate(params(sampler_name=sampler), bundled_tiny)
    again = generate(params(sampler_name=sampler), bundled_tiny)
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))
    far_away = pixels(result.images[0])[:4, :4]  # far from the mask: the original pixels are composited back
    assert np.abs(far_away - pixels(source_image())[:4, :4]).max() <= 1


def test_only_masked_and_the_returned_mask(bundled_tiny):
    result = generate(params(inpaint_full_res=True, inpaint_full_res_padding=4, image_mask=mask(box=(44, 44, 56, 56))),
                      bundled_tiny, options=Options(return_mask=True, return_grid=False))
    image, overlay_mask = result.images
    assert image.size == (64, 64) and overlay_mask.mode == "RGB"
    m = pixels(overlay_mask)[..., 0]
    assert m[:4, :4].max() == 0 and m.max() > 0  # outside the crop: original everywhere


def test_a_batch_equals_its_images_made_alone(bundled_tiny):
    options = Options(deterministic_batches=True, return_grid=False)
    batch = generate(params(batch_size=2, seed=[5, 9]), bundled_tiny, options=options)
    for i, seed in enumerate((5, 9)):
        alone = generate(params(seed=seed), bundled_tiny, options=options)
        assert np.array_equal(pixels(batch.images[i]), pixels(alone.images[0]))


def test_inpainting_model(bundled_tiny_inpainting):
    result = generate(params(), bundled_tiny_inpainting)
    assert "Soft inpainting enabled: True" in result.infotexts[0]


def test_the_facade_takes_a1111s_alwayson_scripts(bundled_tiny):
    def facade(**kw):
        p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, prompt="a cat", init_images=[source_image()],
                                             mask=mask(), width=64, height=64, steps=8, denoising_strength=0.7,
                                             seed=5, sampler_name="Euler", mask_blur=4, do_not_save_samples=True,
                                             do_not_save_grid=True, **kw)
        return process_images(p)

    scripted = facade(alwayson_scripts={"soft inpainting": {"args": [True, 1, 0.5, 4, 0, 0.5, 2]}})
    typed = generate(params(inpaint_full_res=True), bundled_tiny)
    assert np.array_equal(pixels(scripted.images[0]), pixels(typed.images[0]))
    with pytest.raises(ValueError, match="'ADetailer' is not supported"):
        facade(alwayson_scripts={"ADetailer": {"args": []}})
    with pytest.raises(ValueError, match="preservation_strength must be in"):
        facade(alwayson_scripts={"soft inpainting": {"args": [True, 1, -1]}})
