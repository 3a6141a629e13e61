"""img2img behaviour on the tiny model: spec §8 items 42–49, 52–55, 61–64 and the facade contract."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from retouch import Options
from retouch.processing import StableDiffusionProcessingImg2Img, process_images, process_images_with_result
from tests.pipeline.helpers import pixels, source_image


def job(model, **kw):
    defaults = dict(prompt="a cat", init_images=[source_image()], width=64, height=64, steps=10, seed=7,
                    sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    defaults.update(kw)
    return StableDiffusionProcessingImg2Img(sd_model=model, **defaults)


@pytest.fixture
def calls(bundled_tiny, monkeypatch):
    """Record every UNet call (inputs) made through the model."""
    record = []
    real = bundled_tiny.apply_model

    def recording(x, t, context, concat=None):
        record.append({"x": x.clone(), "t": t.clone()})
        return real(x, t, context, concat)

    monkeypatch.setattr(bundled_tiny, "apply_model", recording)
    return record


@pytest.mark.parametrize(("steps", "ds", "fix", "expected"), [
    (20, 0.75, False, 16), (20, 0.5, False, 11), (20, 1.0, False, 20), (20, 0.0, False, 1),
    (20, 0.75, True, 20), (100, 0.29, False, 29), (30, 0.29, False, 9),
])
def test_step_counts(bundled_tiny, calls, steps, ds, fix, expected):  # 42, 44
    p = job(bundled_tiny, steps=steps, denoising_strength=ds, override_settings={"img2img_fix_steps": fix})
    process_images(p)
    assert len(calls) == expected  # one batched cond+uncond UNet call per step


def test_first_input_is_init_plus_sigma_noise(bundled_tiny, calls):  # 43, 48, 49
    p = job(bundled_tiny, steps=20, denoising_strength=0.5, initial_noise_multiplier=0.8,
            override_settings={"img2img_extra_noise": 0.3})
    processed = process_images(p)
    from retouch.sampling.rng import ImageRNG

    eps = ImageRNG((4, 8, 8), [7], source="GPU").next()
    sigma0 = 1.765  # steps 20, ds 0.5, Automatic (spec §4.2)
    x_scaled = calls[0]["x"][:1]  # the denoiser scales its input by 1/sqrt(σ²+1)
    x = x_scaled * math.sqrt(sigma0**2 + 1)
    expected = p.init_latent + eps * 0.8 * sigma0 + eps * 0.8 * 0.3
    assert torch.allclose(x, expected, atol=5e-3)
    assert "Noise multiplier: 0.8" in processed.info and "Extra noise: 0.3" in processed.info


def test_denoising_strength_zero_with_fix_steps_returns_the_init_latent(bundled_tiny, calls):  # 45
    p = job(bundled_tiny, denoising_strength=0.0, override_settings={"img2img_fix_steps": True})
    _, result = process_images_with_result(p)
    captured = {"s": result.latents[0]}
    assert calls == [] and torch.equal(captured["s"], p.init_latent)


def test_strength_above_one_is_0999_but_recorded_verbatim(bundled_tiny):  # 46
    a = process_images(job(bundled_tiny, denoising_strength=1.5))
    b = process_images(job(bundled_tiny, denoising_strength=0.999))
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    assert "Denoising strength: 1.5" in a.info


def test_ddim_timesteps_and_blend_before_each_call(bundled_tiny, calls):  # 47, 53
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    p = job(bundled_tiny, sampler_name="DDIM", steps=20, denoising_strength=0.75, mask=mask, inpaint_full_res=False,
            inpainting_fill=1, mask_blur=0)
    process_images(p)
    assert [int(c["t"][0]) for c in calls] == list(range(701, 50, -50))  # 14 calls, 701 … 51
    for c in calls:  # kept half (right) is the clean init latent at every call
        assert torch.equal(c["x"][0][:, :, 4:], p.init_latent[0][:, :, 4:])


def test_final_latent_blend(bundled_tiny):  # 52
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    p = job(bundled_tiny, mask=mask, inpaint_full_res=False, inpainting_fill=1, mask_blur=0)
    _, result = process_images_with_result(p)
    captured = {"s": result.latents[0]}
    keep = p.mask.bool()
    assert torch.equal(captured["s"][0][keep], p.init_latent[0][keep])


def test_seeds_across_batch_and_iterations(bundled_tiny):  # 54, 62
    processed = process_images(job(bundled_tiny, seed=100, batch_size=2, n_iter=2))
    assert processed.all_seeds == [100, 101, 102, 103] and len(processed.images) == 4
    varied = process_images(job(bundled_tiny, seed=100, subseed=7, subseed_strength=0.3, batch_size=2, n_iter=2))
    assert varied.all_seeds == [100] * 4 and varied.all_subseeds == [7, 8, 9, 10]
    assert "Variation seed: 7, Variation seed strength: 0.3" in varied.infotexts[0]


@pytest.mark.parametrize(("seed", "expected"), [("123", 123), (-5, -5)])
def test_fixed_seeds(bundled_tiny, seed, expected):  # 55
    assert process_images(job(bundled_tiny, seed=seed)).seed == expected


@pytest.mark.parametrize("seed", [-1, "", None, "abc"])
def test_random_seeds(bundled_tiny, seed):  # 55
    value = process_images(job(bundled_tiny, seed=seed, steps=2)).seed
    assert 0 <= value <= 4294967293


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE", "DDIM"])
def test_deterministic_batches_equal_single_runs_exactly(bundled_tiny, sampler):
    kwargs = dict(sampler_name=sampler, steps=8, override_settings={"eta_ddim": 0.5, "deterministic_batches": True})
    batch = process_images(job(bundled_tiny, batch_size=3, seed=40, **kwargs))
    for i in range(3):
        single = process_images(job(bundled_tiny, seed=40 + i, **kwargs))
        assert np.array_equal(pixels(batch.images[i]), pixels(single.images[0]))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE", "DDIM"])
def test_batched_calls_equal_single_runs_up_to_float_rounding(bundled_tiny, sampler):
    """The default evaluates a batch in A1111's one call per step: the same maths, summed in another order."""
    kwargs = dict(sampler_name=sampler, steps=8, override_settings={"eta_ddim": 0.5})
    _, batch = process_images_with_result(job(bundled_tiny, batch_size=3, seed=40, **kwargs))
    for i in range(3):
        _, single = process_images_with_result(job(bundled_tiny, seed=40 + i, **kwargs))
        assert torch.allclose(batch.latents[0][i], single.latents[0][0], rtol=1e-5, atol=5e-4)  # latents reach ±25
        assert np.abs(pixels(batch.images[i]) - pixels(single.images[0])).max() <= 1


@pytest.mark.parametrize(("prompt", "batch", "exact", "calls_per_step", "rows"), [
    ("a cat", 4, False, 1, [8]),  # A1111: every cond and uncond row in one call
    ("a cat AND a dog", 2, False, 1, [6]),  # AND parts are rows too
    ("cat " * 80, 2, False, 2, [2, 2]),  # 154 vs 77 tokens: the positive rows, then the negative rows
    ("a cat", 4, True, 4, [2, 2, 2, 2]),  # deterministic_batches: each image's rows on their own
])
def test_network_calls_per_step(bundled_tiny, calls, prompt, batch, exact, calls_per_step, rows):  # issue 16
    process_images(job(bundled_tiny, prompt=prompt, batch_size=batch, steps=20,
                       override_settings={"deterministic_batches": exact}))
    assert len(calls) == 16 * calls_per_step
    assert [len(c["x"]) for c in calls[:calls_per_step]] == rows


def test_batch_cond_uncond_off_slices_by_batch(bundled_tiny, calls):  # prompt spec §9.5
    process_images(job(bundled_tiny, batch_size=3, steps=20, override_settings={"batch_cond_uncond": False}))
    assert [len(c["x"]) for c in calls[:2]] == [3, 3] and len(calls) == 32


def test_same_inputs_same_pixels(bundled_tiny):
    a = process_images(job(bundled_tiny, sampler_name="DPM++ 2M", seed=3))
    b = process_images(job(bundled_tiny, sampler_name="DPM++ 2M", seed=3))
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    c = process_images(job(bundled_tiny, sampler_name="DPM++ 2M", seed=4))
    assert not np.array_equal(pixels(a.images[0]), pixels(c.images[0]))


def test_several_init_images_shrink_the_batch(bundled_tiny):  # 61, 62, 63
    with pytest.raises(ValueError, match="bad number of images passed: 3; expecting 2 or less"):
        process_images(job(bundled_tiny, batch_size=2, init_images=[source_image(seed=i) for i in range(3)]))
    two = process_images(job(bundled_tiny, batch_size=4, seed=50, init_images=[source_image(seed=i) for i in range(2)]))
    assert len(two.images) == 2 and two.batch_size == 2 and two.all_seeds[:2] == [50, 51]
    p = job(bundled_tiny, batch_size=3)
    process_images(p)
    assert torch.equal(p.init_latent[0], p.init_latent[2])


def test_decode_truncates(bundled_tiny, monkeypatch):  # 64
    from retouch import pipeline

    values = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 3.0])
    image_values = values.reshape(1, 1, 1, 6).expand(1, 3, 1, 6)
    monkeypatch.setattr(bundled_tiny, "decode_first_stage", lambda latents, hooks=None: image_values)
    out = np.array(pipeline.decode_latents(bundled_tiny, torch.zeros(1, 4, 1, 1))[0])[0, :, 0]
    assert out.tolist() == [math.floor(255 * min(max((v + 1) / 2, 0), 1)) for v in values.tolist()]


def test_width_not_multiple_of_eight_truncates_plain_img2img(bundled_tiny):  # 73
    processed = process_images(job(bundled_tiny, width=68, height=64))
    assert processed.images[0].size == (64, 64) and "Size: 68x64" in processed.info


def test_resize_modes_and_latent_upscale(bundled_tiny):  # 7
    src = source_image(96, 48)
    for mode in (0, 1, 2):
        assert process_images(job(bundled_tiny, init_images=[src], resize_mode=mode)).images[0].size == (64, 64)
    p = job(bundled_tiny, init_images=[src], resize_mode=3)
    process_images(p)
    assert p.init_latent.shape == (1, 4, 8, 8)


def test_tiling_is_honoured(bundled_tiny):
    plain = process_images(job(bundled_tiny))
    tiled = process_images(job(bundled_tiny, tiling=True))
    assert "Tiling: True" in tiled.info and "Tiling" not in plain.info
    assert not np.array_equal(pixels(plain.images[0]), pixels(tiled.images[0]))
    assert all(m.padding_mode == "zeros" for m in bundled_tiny.unet.modules() if isinstance(m, torch.nn.Conv2d))


def test_prompt_editing_and_and_run(bundled_tiny):
    base = process_images(job(bundled_tiny, prompt="a cat"))
    edited = process_images(job(bundled_tiny, prompt="a [cat:dog:2] AND red:0.5"))
    assert not np.array_equal(pixels(base.images[0]), pixels(edited.images[0]))


def test_long_negative_prompt_runs_cond_and_uncond_separately(bundled_tiny, calls):
    process_images(job(bundled_tiny, negative_prompt=" ".join(["blurry"] * 80), steps=4, denoising_strength=0.5))
    shapes = {tuple(c["x"].shape) for c in calls}
    assert shapes == {(1, 4, 8, 8)}  # default options: no padding, one call for cond rows, one for uncond


def test_facade_contract(bundled_tiny):
    mask = Image.new("L", (64, 64), 255)
    p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, init_images=[source_image()], mask=mask, mask_blur_x=2,
                                         mask_blur=8, options=Options(initial_noise_multiplier=0.9))
    assert p.image_mask is mask and p.mask is None
    assert (p.mask_blur_x, p.mask_blur_y, p.mask_blur) == (8, 8, 8)
    p.mask_blur_y = 3
    assert p.mask_blur is None
    assert p.initial_noise_multiplier == 0.9
    assert (p.steps, p.inpaint_full_res, p.inpainting_fill, p.denoising_strength, p.resize_mode) == (50, True, 0, 0.75, 0)
    p2 = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, init_images=[source_image()], mask_blur_x=2,
                                          mask_blur_y=10)
    assert p2.mask_blur is None


def test_init_and_sample_leave_a1111_state(bundled_tiny):
    p = job(bundled_tiny)
    processed = process_images(p)
    assert p.init_latent.shape == (1, 4, 8, 8) and p.image_conditioning.shape == (1, 5, 1, 1)
    assert p.all_prompts == ["a cat"] and processed.index_of_first_image == 0 and processed.comments == ""
    info = json.loads(processed.js())
    assert info["sd_model_name"] == bundled_tiny.name and info["extra_generation_params"]["Denoising strength"] == 0.75


def test_samples_save_option_off_saves_only_the_grid(bundled_tiny, tmp_path):
    p = job(bundled_tiny, batch_size=2, seed=9, do_not_save_samples=False, do_not_save_grid=False,
            outpath_samples=str(tmp_path), outpath_grids=str(tmp_path), override_settings={"samples_save": False})
    process_images(p)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["grid-0000.png"]


def test_saving_names_and_grid(bundled_tiny, tmp_path):
    p = job(bundled_tiny, batch_size=2, seed=9, do_not_save_samples=False, do_not_save_grid=False,
            outpath_samples=str(tmp_path), outpath_grids=str(tmp_path))
    processed = process_images(p)
    names = sorted(x.name for x in tmp_path.iterdir())
    assert names == ["00000-9.png", "00001-10.png", "grid-0000.png"]
    assert processed.index_of_first_image == 1 and len(processed.images) == 3
    assert Image.open(tmp_path / "00001-10.png").info["parameters"] == processed.infotexts[2]
    process_images(job(bundled_tiny, seed=11, do_not_save_samples=False, outpath_samples=str(tmp_path)))
    assert (tmp_path / "00002-11.png").is_file()


def test_no_save_when_asked(bundled_tiny, tmp_path):
    process_images(job(bundled_tiny, batch_size=2, outpath_samples=str(tmp_path), outpath_grids=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_two_jobs_with_different_options_in_one_process(bundled_tiny):
    a = process_images(job(bundled_tiny, override_settings={"CLIP_stop_at_last_layers": 2}))
    b = process_images(job(bundled_tiny))
    assert "Clip skip: 2" in a.info and "Clip skip" not in b.info
    assert not np.array_equal(pixels(a.images[0]), pixels(b.images[0]))


def test_lora_tags_are_reported_not_dropped(bundled_tiny):
    processed = process_images(job(bundled_tiny, prompt="a cat <lora:missing:0.8>"))
    assert "Lora not found: missing" in processed.comments
    assert processed.info.startswith("a cat <lora:missing:0.8>")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(width=-64), "width must be between 8"), (dict(height=100000), "height must be between 8"),
    (dict(steps=0), "steps must be between 1"), (dict(denoising_strength=-0.1), "denoising_strength must be >= 0"),
    (dict(sampler_name="Eulr"), "sampler_name: unknown sampler"), (dict(init_images=[]), "init_images must be"),
    (dict(init_images=["x.png"]), r"init_images\[0\] must be a PIL image"),
    (dict(restore_faces=True), "restore_faces"), (dict(cfg_scale=float("nan")), "cfg_scale must be a finite"),
    (dict(resize_mode=7), "resize_mode must be one of"), (dict(mask_blur_x=-1), "mask_blur_x must be between"),
    (dict(override_settings={"nope": 1}), "unknown option 'nope'"), (dict(batch_size=0), "batch_size"),
])
def test_bad_input_is_a_clear_value_error(bundled_tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        process_images(job(bundled_tiny, **kwargs))


@pytest.mark.parametrize("mode", ["P", "L", "RGBA", "I;16", "LA", "CMYK"])
def test_any_image_mode_is_accepted(bundled_tiny, mode):
    img = source_image().convert("RGBA") if mode != "I;16" else Image.fromarray(
        np.asarray(source_image().convert("L"), dtype=np.uint16) * 257)
    if mode not in ("RGBA", "I;16"):
        img = img.convert(mode)
    assert process_images(job(bundled_tiny, init_images=[img], steps=2)).images[0].size == (64, 64)


@pytest.mark.parametrize(("settings", "name"), [
    ({"sd_vae_encode_method": "TAESD"}, "sd_vae_encode_method"), ({"sd_hypernetwork": "anime"}, "sd_hypernetwork"),
    ({"use_old_emphasis_implementation": True}, "use_old_emphasis"), ({"face_restoration": True}, "face_restoration")])
def test_unsupported_settings_are_refused_not_ignored(bundled_tiny, settings, name):
    with pytest.raises(ValueError, match=f"{name}.*: not supported"):
        process_images(job(bundled_tiny, override_settings=settings))


def test_upscaler_for_img2img_enlarges_the_init_image(bundled_tiny):
    """A1111's resize_image sends an enlarged picture through the option's upscaler first (Lanczos otherwise)."""
    small = source_image(32, 32)
    nearest = process_images(p := job(bundled_tiny, init_images=[small], override_settings={
        "upscaler_for_img2img": "Nearest"}))
    by_hand = job(bundled_tiny, init_images=[small.resize((64, 64), Image.NEAREST)])
    process_images(by_hand)
    assert torch.equal(p.init_latent, by_hand.init_latent)
    lanczos = process_images(q := job(bundled_tiny, init_images=[small]))
    assert not torch.equal(q.init_latent, p.init_latent)
    assert not np.array_equal(pixels(nearest.images[0]), pixels(lanczos.images[0]))
    shrunk = [job(bundled_tiny, init_images=[source_image(128, 128)], override_settings=o)
              for o in ({"upscaler_for_img2img": "Nearest"}, {})]
    for one in shrunk:
        process_images(one)
    assert torch.equal(shrunk[0].init_latent, shrunk[1].init_latent)  # shrinking: Lanczos alone
    with pytest.raises(ValueError, match="upscaler_for_img2img: could not find upscaler named 'Bicubic'"):
        process_images(job(bundled_tiny, override_settings={"upscaler_for_img2img": "Bicubic"}))


def test_noise_schedule_options(bundled_tiny):
    plain = process_images(job(bundled_tiny))
    ztsnr = process_images(job(bundled_tiny, override_settings={"sd_noise_schedule": "Zero Terminal SNR"}))
    downcast = process_images(job(bundled_tiny, override_settings={"use_downcasted_alpha_bar": True}))
    assert "Noise Schedule: Zero Terminal SNR" in ztsnr.info and "Downcast alphas_cumprod: True" in downcast.info
    assert not np.array_equal(pixels(plain.images[0]), pixels(ztsnr.images[0]))


def test_euler_with_a_do_nothing_model_keeps_the_noised_latent(bundled_tiny, monkeypatch):  # 50, 51
    monkeypatch.setattr(bundled_tiny, "apply_model", lambda x, t, c, concat=None: torch.zeros_like(x))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    p = job(bundled_tiny, mask=mask, inpaint_full_res=False, inpainting_fill=1, mask_blur=0, steps=20,
            denoising_strength=0.5)
    _, result = process_images_with_result(p)
    captured = {"s": result.latents[0]}
    from retouch.sampling.rng import ImageRNG

    eps = ImageRNG((4, 8, 8), [7], source="GPU").next()
    noised = p.init_latent + 1.765 * eps  # ε ≡ 0 → D(x) = x: Euler never moves
    repaint = p.nmask.bool()
    assert torch.allclose(captured["s"][repaint.unsqueeze(0)], noised[repaint.unsqueeze(0)], atol=2e-3)
    keep = ~repaint
    assert torch.equal(captured["s"][keep.unsqueeze(0)], p.init_latent[keep.unsqueeze(0)])


def test_a_failed_save_keeps_the_images_and_says_why(bundled_tiny, tmp_path, monkeypatch):  # issue 17 #7
    import errno

    from retouch import outputs

    writes = []

    def full_disk(path, data):
        writes.append(path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "_write_atomically", full_disk)
    p = job(bundled_tiny, batch_size=2, do_not_save_samples=False, do_not_save_grid=False,
            outpath_samples=str(tmp_path), outpath_grids=str(tmp_path))
    _, result = process_images_with_result(p)
    assert len(result.images) == 3 and result.save_error is not None and outputs.is_disk_full(result.save_error)
    assert len(writes) == 1 and result.files == []  # tried once, then nothing more
    assert any(c.startswith("Could not save images: No space left on device") for c in result.comments)
