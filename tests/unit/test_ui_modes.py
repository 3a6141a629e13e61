"""How the page's sub-tabs make (image, mask) — A1111's mode dispatch (spec §3.3), without a browser."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from retouch.ui.actions import Fields, fields_from_infotext, request_fields
from retouch.ui.modes import Mode, ModeInputs, image_and_mask, inpaint_sketch, painted_mask, scaled_size


def picture(w=32, h=24, value=(10, 120, 200)):
    return Image.new("RGB", (w, h), value)


def test_painted_mask_is_the_layers_alpha_thresholded_at_128():
    layer = np.zeros((24, 32, 4), np.uint8)
    layer[2:6, 2:6, 3] = 129  # just above: masked
    layer[10:14, 10:14, 3] = 128  # not above: not masked
    layer[20, 30] = (255, 0, 0, 255)
    mask = np.array(painted_mask((32, 24), [Image.fromarray(layer, "RGBA")]))
    assert mask[3, 3] == 255 and mask[11, 11] == 0 and mask[20, 30] == 255 and mask.sum() == 255 * 17


def test_inpaint_mode_uses_the_background_and_refuses_an_empty_mask():
    background = picture().convert("RGBA")
    empty = {"background": background, "layers": [Image.new("RGBA", (32, 24))], "composite": background}
    with pytest.raises(ValueError, match="Inpaint: no mask"):
        image_and_mask(Mode.INPAINT, ModeInputs(inpaint=empty), 4, 0)
    with pytest.raises(ValueError, match="Inpaint: no image"):
        image_and_mask(Mode.INPAINT, ModeInputs(inpaint={"background": None, "layers": []}), 4, 0)
    stroke = Image.new("RGBA", (32, 24))
    stroke.paste((255, 255, 255, 255), (4, 4, 8, 8))
    image, mask = image_and_mask(Mode.INPAINT, ModeInputs(inpaint={**empty, "layers": [stroke]}), 4, 0)
    assert image is background and mask.getbbox() == (4, 4, 8, 8)


def test_inpaint_sketch_follows_a1111():
    orig = picture()
    drawn = orig.copy()
    drawn.paste((250, 0, 0), (8, 8, 16, 16))
    image, mask = inpaint_sketch(drawn, orig, mask_blur=2, mask_alpha=50)
    m = np.array(mask)
    assert m[10, 10] == 127 and m[0, 0] == 0  # 255 × (1 − 50/100), truncated by Pillow's Brightness
    blur = ImageFilter.GaussianBlur(2)
    expected = Image.composite(drawn.filter(blur), orig, mask.filter(blur))
    assert np.array_equal(np.array(image), np.array(expected))
    with pytest.raises(ValueError, match="nothing drawn"):
        inpaint_sketch(orig, orig, 4, 0)


def test_sketch_bakes_strokes_in_and_upload_takes_both_files():
    drawn = picture().convert("RGBA")
    image, mask = image_and_mask(Mode.SKETCH, ModeInputs(sketch={"background": picture(), "layers": [],
                                                                 "composite": drawn}), 4, 0)
    assert image.mode == "RGB" and mask is None
    with pytest.raises(ValueError, match="needs both"):
        image_and_mask(Mode.INPAINT_UPLOAD, ModeInputs(upload_image=picture()), 4, 0)
    with pytest.raises(ValueError, match="img2img: no image"):
        image_and_mask(Mode.IMG2IMG, ModeInputs(), 4, 0)


def test_resize_by_truncates_like_a1111():
    assert scaled_size(picture(33, 21), 1.5) == (49, 31)  # int(49.5), int(31.5): no rounding to 8


def test_request_fields_are_a1111s_api_request():
    fields = Fields(prompt="p", mask_mode="Inpaint not masked", inpainting_fill="latent nothing",
                    inpaint_area="Only masked", resize_mode="Resize and fill", resize_by=True, scale=2.0)
    request = request_fields(fields, picture(30, 20), Image.new("L", (30, 20)), "task(x)")
    assert (request["width"], request["height"]) == (60, 40) and request["resize_mode"] == 2
    assert request["inpainting_mask_invert"] == 1 and request["inpainting_fill"] == 3
    assert request["inpaint_full_res"] is True and request["force_task_id"] == "task(x)"
    assert request["subseed_strength"] == 0.0  # variation settings count only when "Extra" is ticked


def test_paste_reads_an_infotext_into_fields():
    values = fields_from_infotext("a cat\nNegative prompt: dog\nSteps: 12, Sampler: Euler a, CFG scale: 5, "
                                  "Seed: 7, Size: 96x64, Denoising strength: 0.5, Variation seed: 3, "
                                  "Variation seed strength: 0.25, Mask blur: 2")
    assert values["prompt"] == "a cat" and values["negative_prompt"] == "dog" and values["steps"] == 12
    assert (values["width"], values["height"], values["seed"]) == (96, 64, 7)
    assert values["variation"] and values["subseed"] == 3 and values["subseed_strength"] == 0.25
    assert values["mask_blur"] == 2 and values["sampler_name"] == "Euler a"


def test_paste_leaves_out_numbers_that_are_not_finite():
    values = fields_from_infotext("a cat\nSteps: 1e400, CFG scale: inf, Seed: nan, Denoising strength: 0.5")
    assert values["denoising_strength"] == 0.5  # this raised OverflowError on the page before
    assert not {"steps", "cfg_scale", "seed"} & set(values)
