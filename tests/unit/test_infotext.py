"""Infotext formatting: spec §6 (items 66–67)."""

import pytest

from retouch import Options
from retouch.infotext import GenerationInfo, format_infotext, generation_params, parse_infotext, quote


def params(extra=None, **fields):
    info = dict(steps=20, sampler_name="Euler a", scheduler_label="Automatic", cfg_scale=7.0, image_cfg_scale=None,
                width=512, height=512, model_hash="6ce0161689", model_name="v1-5-pruned-emaonly")
    info.update(fields)
    return generation_params(GenerationInfo(**info), seed=1234, subseed=5, options=Options(),
                             extra=extra or {"Denoising strength": 0.75, "Mask blur": 4})


def test_spec_example_order_and_values():
    text = format_infotext("a red hat", "blurry", params())
    assert text == ("a red hat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, "
                    "CFG scale: 7.0, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
                    "Denoising strength: 0.75, Mask blur: 4, Version: retouch 0.1.0")


def test_extra_keys_already_in_prefix_update_in_place():
    p = params(extra={"Denoising strength": 0.5, "Schedule type": "Karras", "Inpaint area": "Only masked"})
    keys = list(p)
    assert keys.index("Schedule type") == 2 and p["Schedule type"] == "Karras"
    assert keys.index("Inpaint area") > keys.index("Tiling")


def test_optional_keys():
    p = params(subseed_strength=0.3, seed_resize_from_w=256, seed_resize_from_h=384, clip_skip=2, ensd=31337,
               randn_source="CPU", tiling=True, conditional_mask_weight=1.0)
    line = format_infotext("x", "", p).split("\n")[-1]
    for piece in ("Variation seed: 5", "Variation seed strength: 0.3", "Seed resize from: 256x384",
                  "Conditional mask weight: 1.0", "Clip skip: 2", "ENSD: 31337", "RNG: CPU", "Tiling: True"):
        assert piece in line


def test_quoting():  # 67
    assert quote("plain") == "plain"
    assert quote("a, b") == '"a, b"' and quote("k: v") == '"k: v"' and quote('a\n"b"') == '"a\\n\\"b\\""'
    assert quote("café, ok") == '"café, ok"'


def test_empty_negative_prompt_line_is_omitted():
    assert "Negative prompt" not in format_infotext("x", "", params())


def test_parse_round_trip():
    text = format_infotext("a cat, sitting\nmore", "bad: x", params(extra={"Lora hashes": "a: 1, b: 2"}))
    prompt, negative, values = parse_infotext(text)
    assert prompt == "a cat, sitting\nmore" and negative == "bad: x"
    assert values["Steps"] == "20" and values["Lora hashes"] == "a: 1, b: 2" and values["Size"] == "512x512"


def test_every_key_the_writer_writes_reads_back_to_its_field():
    # one table of keys: what the writer writes, the API's infotext field, paste and PNG info read back
    from retouch.infotext import INFOTEXT_FIELDS, infotext_values

    written = params(subseed_strength=0.3, seed_resize_from_w=256, seed_resize_from_h=384, clip_skip=2, ensd=31337,
                     randn_source="CPU", image_cfg_scale=1.5, token_merging_ratio=0.3, token_merging_ratio_hr=0.5,
                     extra={"Denoising strength": 0.75, "Mask blur": 4, "Mask mode": "Inpaint not masked",
                            "Masked content": "latent noise", "Inpaint area": "Only masked",
                            "Masked area padding": 32, "Noise multiplier": 0.9, "Hires upscale": 1.5,
                            "Hires resize": "1024x768", "Hires steps": 10, "Hires upscaler": "Latent (bicubic)",
                            "Hires sampler": "DPM++ 2M", "Hires schedule type": "Karras",
                            "Hires checkpoint": "b [123]", "Hires prompt": "a dog", "Hires negative prompt": "x",
                            "Refiner": "b [123]", "Refiner switch at": 0.8})
    _, _, pairs = parse_infotext(format_infotext("a cat", "", written))
    fields, options = infotext_values(pairs)
    assert fields == {"steps": 20, "sampler_name": "Euler a", "scheduler": "Automatic", "cfg_scale": 7.0,
                      "image_cfg_scale": 1.5, "seed": 1234, "subseed": 5, "subseed_strength": 0.3,
                      "denoising_strength": 0.75, "mask_blur": 4, "inpaint_full_res_padding": 32,
                      "initial_noise_multiplier": 0.9, "width": 512, "height": 512, "seed_resize_from_w": 256,
                      "seed_resize_from_h": 384, "inpainting_mask_invert": 1, "inpainting_fill": 2,
                      "inpaint_full_res": True, "hr_scale": 1.5, "hr_resize_x": 1024, "hr_resize_y": 768,
                      "hr_second_pass_steps": 10, "hr_upscaler": "Latent (bicubic)", "hr_sampler_name": "DPM++ 2M",
                      "hr_scheduler": "Karras", "hr_checkpoint_name": "b [123]", "hr_prompt": "a dog",
                      "hr_negative_prompt": "x", "refiner_checkpoint": "b [123]", "refiner_switch_at": 0.8,
                      "enable_hr": True}
    assert options == {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "randn_source": "CPU",
                       "sd_model_checkpoint": "v1-5-pruned-emaonly", "token_merging_ratio": 0.3,
                       "token_merging_ratio_hr": 0.5}
    assert {f.key for f in INFOTEXT_FIELDS} <= set(pairs)  # every key of the table was written


def test_values_that_are_no_numbers():
    from retouch.infotext import infotext_values

    with pytest.raises(ValueError, match="bad value for 'Steps'"):
        infotext_values({"Steps": "1e400"})
    assert infotext_values({"Steps": "1e400", "CFG scale": "inf", "Seed": "7.0"}, strict=False) == ({"seed": 7}, {})
