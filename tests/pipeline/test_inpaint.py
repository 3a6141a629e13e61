"""Inpainting on the tiny models: spec §8 items 12–41 and the issue's property tests."""

import numpy as np
import pytest
import torch
from PIL import Image

from retouch import Options, load_model
from retouch.control import JobHooks
from retouch.pipeline import batch_pixels, initialize, prepare_inputs
from retouch.processing import StableDiffusionProcessingImg2Img, process_images
from retouch.sampling.rng import ImageRNG
from tests.pipeline.helpers import pixels, source_image


def rect_mask(size=(64, 64), box=(16, 16, 48, 40), value=255):
    mask = Image.new("L", size, 0)
    mask.paste(value, box)
    return mask


def job(model, **kw):
    defaults = dict(prompt="a cat", init_images=[source_image()], width=64, height=64, steps=6, seed=3,
                    sampler_name="Euler", mask=rect_mask(), inpaint_full_res=False, inpainting_fill=1,
                    do_not_save_samples=True, do_not_save_grid=True)
    defaults.update(kw)
    return StableDiffusionProcessingImg2Img(sd_model=model, **defaults)


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "Euler a", "DDIM", "UniPC"])
@pytest.mark.parametrize("full_res", [False, True])
def test_unmasked_pixels_are_the_source_exactly(bundled_tiny, sampler, full_res):
    src = source_image(80, 64) if full_res else source_image()
    p = job(bundled_tiny, sampler_name=sampler, inpaint_full_res=full_res, inpaint_full_res_padding=4, init_images=[src],
            mask=rect_mask(src.size, (30, 20, 50, 36)), inpainting_fill=0)
    out = pixels(process_images(p).images[0])
    overlay_mask = np.array(p.mask_for_overlay.convert("L"))
    expected_source = pixels(src) if full_res else pixels(src.resize((64, 64), Image.Resampling.LANCZOS))
    keep = overlay_mask == 0
    assert keep.any() and np.array_equal(out[keep], expected_source[keep])
    if full_res:
        assert out.shape[:2] == (64, 80)  # only masked: the source size (24)


def test_all_zero_mask_returns_the_source_exactly(bundled_tiny):  # 30
    black = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    out = process_images(job(bundled_tiny, mask=black, inpainting_fill=0)).images[0]
    assert np.array_equal(pixels(out), pixels(source_image()))


def test_all_255_mask_returns_the_generated_image_exactly(bundled_tiny):  # 31, 32
    full = Image.new("L", (64, 64), 255)
    with_overlay = process_images(job(bundled_tiny, mask=full)).images[0]
    without = process_images(job(bundled_tiny, mask=full, override_settings={"overlay_inpaint": False})).images[0]
    assert np.array_equal(pixels(with_overlay), pixels(without))


def test_only_masked_without_overlay_returns_the_crop(bundled_tiny):  # 32
    src = source_image(96, 64)
    p = job(bundled_tiny, init_images=[src], mask=rect_mask((96, 64), (40, 20, 50, 30)), inpaint_full_res=True,
            override_settings={"overlay_inpaint": False})
    assert process_images(p).images[0].size == (64, 64)


def test_only_masked_crop_and_infotext(bundled_tiny):  # 20, 22, 23, 24
    src = source_image(128, 96)
    p = job(bundled_tiny, init_images=[src], mask=rect_mask((128, 96), (60, 40, 70, 50)), inpaint_full_res=True,
            inpaint_full_res_padding=8, mask_blur=2)
    processed = process_images(p)
    # bbox of the blurred mask (grown by 2·2.5+… = 5 px), padded by 8, expanded to 1:1
    assert p.paste_to == (47, 27, 36, 36)
    assert processed.images[0].size == (128, 96)
    assert "Mask blur: 2, Inpaint area: Only masked, Masked area padding: 8" in processed.info


def test_only_masked_with_blank_mask_falls_back_to_img2img(bundled_tiny):  # 25
    p = job(bundled_tiny, mask=Image.new("L", (64, 64), 0), inpaint_full_res=True)
    processed = process_images(p)
    assert 'Unable to perform "Inpaint Only mask" because mask is blank' in processed.comments
    assert "Inpaint area" not in processed.info and p.inpaint_full_res is False and p.mask is None
    assert not np.array_equal(pixels(processed.images[0]), pixels(source_image()))


def test_whole_picture_overlay_mask_is_doubled(bundled_tiny):  # 16
    p = job(bundled_tiny, mask=rect_mask(value=100), mask_blur=0)
    process_images(p)
    values = set(np.unique(np.array(p.mask_for_overlay)).tolist())
    assert values == {0, 200}
    p = job(bundled_tiny, mask=rect_mask(value=128), mask_blur=0)
    process_images(p)
    assert set(np.unique(np.array(p.mask_for_overlay)).tolist()) == {0, 255}


def test_invert_and_blur_infotext(bundled_tiny):  # 12, 14, 15
    inverted = process_images(job(bundled_tiny, inpainting_mask_invert=1))
    assert "Mask mode: Inpaint not masked" in inverted.info and "Mask blur: 4" in inverted.info
    assert "Mask blur" not in process_images(job(bundled_tiny, mask_blur=0)).info
    assert "Mask blur" not in process_images(job(bundled_tiny, mask_blur_x=2, mask_blur_y=10)).info


@pytest.mark.parametrize(("fill", "text"), [(0, "Masked content: fill"), (1, None), (2, "Masked content: latent noise"),
                                            (3, "Masked content: latent nothing")])
def test_masked_content_infotext(bundled_tiny, fill, text):  # 37
    info = process_images(job(bundled_tiny, inpainting_fill=fill)).info
    if text:
        assert text in info
    else:
        assert "Masked content" not in info


def test_fill_changes_the_vae_input_for_modes_0_2_3_only(bundled_tiny):  # 34
    vae_input = {fill: np.array(prepare_inputs(job(bundled_tiny, inpainting_fill=fill), Options()).images[0])
                 for fill in range(4)}
    assert not np.array_equal(vae_input[1], vae_input[0])
    assert np.array_equal(vae_input[0], vae_input[2]) and np.array_equal(vae_input[0], vae_input[3])


def test_latent_noise_and_latent_nothing(bundled_tiny):  # 35, 36
    p = job(bundled_tiny, inpainting_fill=2, seed=21)
    process_images(p)
    eps = ImageRNG((4, 8, 8), [21], source="GPU").next()
    repaint = p.nmask.bool()
    assert torch.equal(p.init_latent[0][repaint], eps[0][repaint])
    p = job(bundled_tiny, inpainting_fill=3)
    process_images(p)
    assert (p.init_latent[0][p.nmask.bool()] == 0).all()


def test_latent_masks(bundled_tiny):  # 17, 18, 19
    p = job(bundled_tiny, mask=rect_mask(box=(20, 0, 44, 64)), mask_blur=0)
    process_images(p)
    assert p.nmask[0, 0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    assert torch.equal(p.mask, 1 - p.nmask) and p.nmask.shape == (4, 8, 8)
    soft = job(bundled_tiny, mask=rect_mask(box=(0, 0, 12, 64)), mask_blur=0, mask_round=False)
    process_images(soft)
    assert abs(soft.nmask[0, 0, 1].item() - 0.506) < 0.01


def test_custom_latent_mask_drives_the_blend_but_not_the_overlay(bundled_tiny):
    p = job(bundled_tiny, mask_blur=0)
    p.latent_mask = rect_mask(box=(0, 0, 64, 32))
    process_images(p)
    assert p.nmask[0, :4].min() == 1 and p.nmask[0, 4:].max() == 0
    assert np.array(p.mask_for_overlay)[20, 30] == 255 and np.array(p.mask_for_overlay)[50, 5] == 0


def test_mask_outputs(bundled_tiny):
    processed = process_images(job(bundled_tiny, override_settings={"return_mask": True, "return_mask_composite": True}))
    assert len(processed.images) == 3 and len(processed.infotexts) == 1
    assert processed.images[1].mode == "RGB" and processed.images[2].mode == "RGBA"


def test_inpainting_model_conditioning(bundled_tiny_inpainting):  # 38, 39, 41
    p = job(bundled_tiny_inpainting, mask=rect_mask(box=(16, 16, 40, 48)), mask_blur=0)
    state = initialize(p.resolve(), bundled_tiny_inpainting, Options(), JobHooks())
    cond = state.image_conditioning
    assert cond.shape == (1, 5, 8, 8)
    expected_mask = torch.zeros(8, 8)
    expected_mask[2:6, 2:5] = 1  # nearest: pixel (8i, 8j)
    assert torch.equal(cond[0, 0], expected_mask)
    masked = state.pixels * 2 - 1
    m = torch.from_numpy(np.array(rect_mask(box=(16, 16, 40, 48))) / 255.0).float()
    masked = masked * (1 - m)
    assert torch.allclose(cond[:, 1:], bundled_tiny_inpainting.encode_first_stage(masked), atol=1e-5)
    processed = process_images(p)
    assert torch.equal(p.image_conditioning, cond) and "Conditional mask weight: 1.0" in processed.info


def test_inpainting_model_without_mask_and_with_weight(bundled_tiny_inpainting):  # 40
    p = job(bundled_tiny_inpainting, mask=None, override_settings={"inpainting_mask_weight": 0.25})
    processed = process_images(p)
    assert (p.image_conditioning[:, 0] == 1).all()
    pixels_01, _ = batch_pixels(prepare_inputs(p, Options()).images, 1)
    expected = bundled_tiny_inpainting.encode_first_stage((pixels_01 * 2 - 1) * 0.75)
    assert torch.allclose(p.image_conditioning[:, 1:], expected, atol=1e-5)
    assert "Conditional mask weight: 0.25" in processed.info


def test_conditional_mask_weight_only_for_inpainting_models(bundled_tiny):  # 41
    assert "Conditional mask weight" not in process_images(job(bundled_tiny)).info


@pytest.fixture(scope="module")
def tiny_pix2pix():
    return load_model("tiny-pix2pix")


def test_instruct_pix2pix_three_way_guidance(tiny_pix2pix, monkeypatch):
    batches = []
    real = tiny_pix2pix.apply_model
    monkeypatch.setattr(tiny_pix2pix, "apply_model",
                        lambda x, t, c, concat=None: batches.append(x.shape[0]) or real(x, t, c, concat))
    p = job(tiny_pix2pix, mask=None, image_cfg_scale=1.5)
    processed = process_images(p)
    assert set(batches) == {3} and "Image CFG scale: 1.5" in processed.info
    assert p.image_conditioning.shape == (1, 4, 8, 8)
    batches.clear()
    plain = process_images(job(tiny_pix2pix, mask=None, image_cfg_scale=1.0))
    assert set(batches) == {2} and "Image CFG scale: 1.0" in plain.info


def test_image_cfg_scale_ignored_for_other_models(bundled_tiny):
    p = job(bundled_tiny, image_cfg_scale=1.5)
    assert "Image CFG scale" not in process_images(p).info and p.image_cfg_scale is None


def test_color_correction(bundled_tiny):
    corrected = process_images(job(bundled_tiny, mask=None, override_settings={"img2img_color_correction": True}))
    plain = process_images(job(bundled_tiny, mask=None))
    assert not np.array_equal(pixels(corrected.images[0]), pixels(plain.images[0]))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(mask_blur_x=-1), "mask_blur_x"), (dict(inpaint_full_res_padding=-2), "inpaint_full_res_padding"),
    (dict(width=68), "images do not match"), (dict(inpainting_fill=5), "inpainting_fill must be one of"),
    (dict(resize_mode=3, init_images=[source_image(96, 64)]), "images do not match"),
    (dict(init_images=[]), "init_images"), (dict(mask="mask.png"), "image_mask must be a PIL image"),
])
def test_bad_inpaint_input(bundled_tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        process_images(job(bundled_tiny, **kwargs))


def test_mask_of_another_size_is_reconciled(bundled_tiny):
    big_mask = rect_mask((128, 128), (32, 32, 96, 80))
    for full_res in (False, True):
        processed = process_images(job(bundled_tiny, mask=big_mask, inpaint_full_res=full_res))
        assert processed.images[0].size == (64, 64)


@pytest.mark.parametrize("mode", ["P", "1", "I;16", "RGBA", "LA"])
def test_mask_modes(bundled_tiny, mode):
    mask = rect_mask()
    if mode == "I;16":
        mask = Image.fromarray(np.asarray(mask, dtype=np.uint16) * 257)
    elif mode == "RGBA":
        mask = mask.convert("RGBA")
    else:
        mask = mask.convert(mode)
    p = job(bundled_tiny, mask=mask, mask_blur=0)
    process_images(p)
    assert p.nmask[0].sum() > 0 and p.nmask[0, 0, 0] == 0


def test_save_mask_options_write_extra_files(bundled_tiny, tmp_path):
    p = job(bundled_tiny, seed=12, do_not_save_samples=False, outpath_samples=str(tmp_path),
            override_settings={"save_mask": True, "save_mask_composite": True})
    processed = process_images(p)
    names = sorted(x.name for x in tmp_path.iterdir())
    assert names == ["00000-12.png", "00001-12-mask.png", "00002-12-mask-composite.png"]
    assert len(processed.images) == 1  # saved, not returned (return_mask is off)
