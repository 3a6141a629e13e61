"""txt2img, the hires fix and the refiner against the real A1111 v1.10.1 (oracle cases 250–275), and their rules."""

import json

import numpy as np
import pytest
from PIL import Image

from retouch import load_model
from retouch.control import JobControl
from retouch.options import Options
from retouch.params import Txt2ImgParams
from retouch.params.txt2img import hires_target
from retouch.pipeline import CheckpointFolder, JobResources, generate
from retouch.processing import (
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
    process_images,
)
from tests.conftest import MODELS, ORACLE, need_shared
from tests.host import bound
from tests.pipeline.helpers import pixels

PROMPT = "a red cat sitting on a blue mat"


@pytest.fixture(scope="module")
def sd1():
    """tiny-sd1 with the reference upscaler folder (the refiner tiny-sd1-b lies beside it, as in A1111's folder)."""
    need_shared()
    return load_model(MODELS / "tiny-sd1.safetensors", esrgan_models_path=MODELS / "ESRGAN")


@pytest.fixture(scope="module")
def checkpoints(sd1):
    """One folder for the module, so tiny-sd1-b and tiny-sdxl load once."""
    return CheckpointFolder.beside(sd1)


def _run_case(case, checkpoints):
    spec = json.loads((ORACLE / "cases" / f"{case}.json").read_text())
    request = spec["request"]
    name = request.get("override_settings", {}).get("sd_model_checkpoint", "tiny-sd1")
    model = checkpoints.checkpoint(name, "sd_model_checkpoint")
    skip = ("init_images", "override_settings", "override_settings_restore_afterwards", "script_name", "script_args")
    kwargs = {k: v for k, v in request.items() if k not in skip}
    common = dict(sd_model=model, do_not_save_samples=True, do_not_save_grid=True, checkpoints=checkpoints)
    if spec["endpoint"].endswith("txt2img"):
        p = StableDiffusionProcessingTxt2Img(**common, **kwargs)
    else:
        inits = [Image.open(ORACLE / "inputs" / n) for n in request["init_images"]]
        p = StableDiffusionProcessingImg2Img(**common, init_images=inits, **kwargs)
    return process_images(p)


def _reference(case, i=0):
    image = pixels(Image.open(ORACLE / "cases" / f"{case}_out{i}.png"))
    return image, (ORACLE / "cases" / f"{case}_infotext{i}.txt").read_text()


@pytest.mark.parametrize("case", ["250", "252", "255", "260", "263", "270", "273", "275"])
def test_oracle_cases(case, checkpoints):
    """txt2img (Euler, DPM++ 2M Karras, a batch of 2 with Euler a, SDXL), hires fix by latent (260) and Lanczos (263),
    the refiner in txt2img (270) and img2img (273): A1111's pixels and infotext."""
    processed = _run_case(case, checkpoints)
    count = len(list((ORACLE / "cases").glob(f"{case}_out*.png")))
    assert len(processed.images) == count
    for i in range(count):
        image, infotext = _reference(case, i)
        ours = pixels(processed.images[i])
        assert ours.shape == image.shape
        assert np.abs(ours - image).max() <= bound(2, 4)
        assert processed.infotexts[i].rsplit("Version: ", 1)[0] == infotext.rsplit("Version: ", 1)[0]


def test_hires_with_a_model_upscaler(checkpoints):
    """265: ESRGAN hires with 3 second-pass steps. The first pass lies within a level of A1111's (float summation
    order); this pass magnifies a level's difference in a few first-pass pixels to tens of levels (measured:
    ±1 on 1 % of them moves the result by up to 26), so this case is held to its statistics; the upscaler itself is
    exact (tests/unit/test_upscalers.py)."""
    processed = _run_case("265", checkpoints)
    image, infotext = _reference("265")
    diff = np.abs(pixels(processed.images[0]) - image)
    assert diff.max() <= 12 and diff.mean() < 1.0
    assert processed.infotexts[0].rsplit("Version: ", 1)[0] == infotext.rsplit("Version: ", 1)[0]


def test_info_json_of_a_hires_job(checkpoints):
    processed = _run_case("260", checkpoints)
    ours = json.loads(processed.js())
    theirs = json.loads((ORACLE / "cases" / "260_info.json").read_text())
    assert set(ours) == set(theirs)
    for key in theirs:
        if key not in ("job_timestamp", "version", "infotexts"):
            assert ours[key] == theirs[key], key


def test_hires_target_sizes():
    """A1111's calculate_target_resolution: by scale, by one side (aspect kept), by both (cropped to fit)."""
    def target(**kw):
        return hires_target(Txt2ImgParams(width=512, height=384, enable_hr=True, **kw))

    t = target(hr_scale=1.5)
    assert (t.upscale_to_x, t.upscale_to_y, t.width, t.height) == (768, 576, 768, 576)
    assert t.extra == (("Hires upscale", 1.5),)
    t = target(hr_resize_x=1000)
    assert (t.upscale_to_x, t.upscale_to_y, t.extra) == (1000, 750, (("Hires resize", "1000x0"),))
    t = target(hr_resize_y=600)
    assert (t.upscale_to_x, t.upscale_to_y) == (800, 600)
    t = target(hr_resize_x=1024, hr_resize_y=1024)  # wider source: upscale to the height, crop the width
    assert (t.upscale_to_x, t.upscale_to_y, t.truncate_x, t.truncate_y) == (1365, 1024, 42, 0)
    assert (t.width, t.height) == (1024, 1024)
    t = target(hr_resize_x=1024, hr_resize_y=512)  # taller source: upscale to the width, crop the height
    assert (t.upscale_to_x, t.upscale_to_y, t.truncate_y) == (1024, 768, 32)
    assert (t.width, t.height) == (1024, 512)


def test_hires_resize_gives_the_asked_size(sd1):
    params = Txt2ImgParams(prompt=PROMPT, steps=2, width=64, height=48, seed=3, enable_hr=True, hr_resize_x=96,
                           hr_resize_y=96, hr_upscaler="Latent (nearest-exact)", denoising_strength=0.5)
    result = generate(params, sd1)
    assert result.images[0].size == (96, 96)
    assert "Hires resize: 96x96" in result.infotexts[0]
    assert "Size: 64x48" in result.infotexts[0]


def test_batch_equals_single_runs_with_hires(sd1):
    """A batch of 2 with the hires fix gives the pictures of two single runs (deterministic batches)."""
    options = Options(deterministic_batches=True)
    common = dict(prompt=PROMPT, steps=3, width=64, height=64, enable_hr=True, hr_upscaler="Latent",
                  denoising_strength=0.6, sampler_name="Euler a")
    batch = generate(Txt2ImgParams(seed=11, batch_size=2, **common), sd1, options=options)
    singles = [generate(Txt2ImgParams(seed=s, **common), sd1, options=options).images[0] for s in (11, 12)]
    assert batch.index_of_first_image == 1  # the grid first
    for ours, single in zip(batch.images[1:], singles, strict=True):
        assert np.array_equal(pixels(ours), pixels(single))


def test_hires_second_pass_settings_reach_the_infotext(sd1):
    params = Txt2ImgParams(prompt=PROMPT, steps=3, width=64, height=64, seed=5, enable_hr=True, hr_scale=1.5,
                           sampler_name="Euler",
                           hr_upscaler="Nearest", hr_sampler_name="DPM++ 2M", hr_scheduler="Karras",
                           hr_prompt="a blue cat", hr_second_pass_steps=2, denoising_strength=0.5)
    result = generate(params, sd1)
    text = result.infotexts[0]
    assert result.images[0].size == (96, 96)
    for part in ("Hires sampler: DPM++ 2M", "Hires prompt: a blue cat", "Hires schedule type: Karras",
                 "Hires upscale: 1.5", "Hires steps: 2", "Hires upscaler: Nearest"):
        assert part in text
    assert text.index("Hires sampler") < text.index("Hires prompt") < text.index("Hires schedule type") \
        < text.index("Hires upscale") < text.index("Hires steps") < text.index("Hires upscaler")


def test_unknown_names_fail_before_any_work(sd1, checkpoints):
    base = dict(prompt=PROMPT, steps=2, width=64, height=64, enable_hr=True)
    with pytest.raises(ValueError, match="hr_upscaler: could not find upscaler named 'Bicubic'.*Lanczos"):
        generate(Txt2ImgParams(hr_upscaler="Bicubic", **base), sd1)
    with pytest.raises(ValueError, match="hr_upscaler: the model file of R-ESRGAN 4x\\+ is not on disk"):
        generate(Txt2ImgParams(hr_upscaler="R-ESRGAN 4x+", **base), sd1)
    with pytest.raises(ValueError, match="refiner_checkpoint: could not find checkpoint with name 'nope'.*tiny-sd1-b"):
        generate(Txt2ImgParams(refiner_checkpoint="nope", refiner_switch_at=0.5, **base), sd1,
                 resources=JobResources(checkpoints))
    with pytest.raises(ValueError, match="hr_sampler_name"):
        Txt2ImgParams(hr_sampler_name="Euler z", **base).validate()
    with pytest.raises(ValueError, match="refiner_checkpoint: tiny-sdxl works in another latent space"):
        generate(Txt2ImgParams(refiner_checkpoint="tiny-sdxl", refiner_switch_at=0.5, **base), sd1,
                 resources=JobResources(checkpoints))


def test_refiner_pass_choice_with_hires(sd1, checkpoints):
    """hires_fix_refiner_pass: the switch happens in the passes it names, and the infotext says which."""
    params = Txt2ImgParams(prompt=PROMPT, steps=4, width=64, height=64, seed=7, enable_hr=True, hr_upscaler="Latent",
                           denoising_strength=0.6, refiner_checkpoint="tiny-sd1-b", refiner_switch_at=0.3)
    texts = {}
    images = {}
    for which in ("first pass", "second pass", "both"):
        result = generate(params, sd1, options=Options(hires_fix_refiner_pass=which),
                          resources=JobResources(checkpoints))
        texts[which], images[which] = result.infotexts[0], pixels(result.images[0])
    assert "Hires refiner: first pass" in texts["first pass"] and "Hires refiner" not in texts["second pass"]
    assert "Hires refiner: both" in texts["both"]
    for text in texts.values():
        assert "Refiner: tiny-sd1-b [9a6d492510], Refiner switch at: 0.3" in text
    assert not np.array_equal(images["first pass"], images["second pass"])
    assert not np.array_equal(images["both"], images["second pass"])


def test_refiner_never_reached_leaves_no_trace(sd1, checkpoints):
    """A switch point past the last step (1.0: the last σ is at 0.999 done) samples on the model alone."""
    common = dict(prompt=PROMPT, steps=3, width=64, height=64, seed=9)
    alone = generate(Txt2ImgParams(**common), sd1)
    late = generate(Txt2ImgParams(refiner_checkpoint="tiny-sd1-b", refiner_switch_at=1.0, **common), sd1,
                    resources=JobResources(checkpoints))
    assert np.array_equal(pixels(alone.images[0]), pixels(late.images[0]))
    assert alone.infotexts[0] == late.infotexts[0]


def test_refiner_switch_by_sampling_steps(sd1, checkpoints):
    common = dict(prompt=PROMPT, steps=4, width=64, height=64, seed=9, refiner_checkpoint="tiny-sd1-b")
    by_sigma = generate(Txt2ImgParams(refiner_switch_at=0.3, **common), sd1, resources=JobResources(checkpoints))
    by_steps = generate(Txt2ImgParams(refiner_switch_at=0.3, **common), sd1, resources=JobResources(checkpoints),
                        options=Options(refiner_switch_by_sample_steps=True))
    assert "Refiner switch by sampling steps: True" in by_steps.infotexts[0]
    assert "Refiner switch by sampling steps" not in by_sigma.infotexts[0]
    assert not np.array_equal(pixels(by_sigma.images[0]), pixels(by_steps.images[0]))


@pytest.mark.parametrize(("first", "refiner"), [("tiny-sd2-inpainting", "tiny-sd2-v"),
                                               ("tiny-sdxl-inpainting", "tiny-sdxl")])
def test_a_refiner_from_the_start_samples_as_that_model_alone(checkpoints, first, refiner):
    """A1111 lets a plain refiner follow an inpainting model (the mask conditioning is ignored) and an SD2 v model
    follow an ε one (same σs, the v wrapper): switched at the first call, the job is the refiner's own."""
    common = dict(prompt=PROMPT, steps=3, width=64, height=64, seed=11, sampler_name="Euler")
    switched = generate(Txt2ImgParams(refiner_checkpoint=refiner, refiner_switch_at=0.0, **common),
                        checkpoints.checkpoint(first, "sd_model_checkpoint"), resources=JobResources(checkpoints))
    alone = generate(Txt2ImgParams(**common), checkpoints.checkpoint(refiner, "sd_model_checkpoint"))
    assert np.array_equal(pixels(switched.images[0]), pixels(alone.images[0]))
    assert f"Refiner: {refiner} [" in switched.infotexts[0]


def test_a_refiner_without_a_switch_point_takes_over_from_the_start(sd1, checkpoints):
    """A1111's apply_refiner waits only for a switch point it is given: with None the refiner samples from the first
    step, and the infotext names it without "Refiner switch at"."""
    common = dict(prompt=PROMPT, steps=3, width=64, height=64, seed=11, refiner_checkpoint="tiny-sd1-b")
    unset = generate(Txt2ImgParams(refiner_switch_at=None, **common), sd1, resources=JobResources(checkpoints))
    zero = generate(Txt2ImgParams(refiner_switch_at=0.0, **common), sd1, resources=JobResources(checkpoints))
    assert np.array_equal(pixels(unset.images[0]), pixels(zero.images[0]))
    assert "Refiner: tiny-sd1-b [" in unset.infotexts[0] and "Refiner switch at" not in unset.infotexts[0]
    assert "Refiner switch at: 0.0" in zero.infotexts[0]
    with pytest.raises(ValueError, match="refiner_switch_at must be between 0 and 1, got 1.5"):
        Txt2ImgParams(refiner_switch_at=1.5, **common).validate()


def test_an_inpainting_refiner_cannot_follow_a_plain_model(checkpoints):
    sdxl = checkpoints.checkpoint("tiny-sdxl", "sd_model_checkpoint")
    with pytest.raises(ValueError, match="refiner_checkpoint: tiny-sdxl-inpainting is an inpainting model and "
                                         "tiny-sdxl a plain one"):
        generate(Txt2ImgParams(prompt=PROMPT, steps=2, width=64, height=64, refiner_checkpoint="tiny-sdxl-inpainting",
                               refiner_switch_at=0.5), sdxl, resources=JobResources(checkpoints))
    inpainting = checkpoints.checkpoint("tiny-sdxl-inpainting", "sd_model_checkpoint")
    with pytest.raises(ValueError, match="refiner_checkpoint: tiny-sdxl-inpainting is an inpainting model"):
        # the refiner would take over from the plain hires checkpoint in the second pass
        generate(Txt2ImgParams(prompt=PROMPT, steps=2, width=64, height=64, enable_hr=True, denoising_strength=0.5,
                               hr_checkpoint_name="tiny-sdxl", refiner_checkpoint="tiny-sdxl-inpainting",
                               refiner_switch_at=0.5), inpainting, resources=JobResources(checkpoints))


@pytest.mark.parametrize(("first", "hires"), [("tiny-sdxl", "tiny-sdxl-inpainting"), ("tiny-sdxl-inpainting", "tiny-sdxl"),
                                             ("tiny-sd2-v", "tiny-sd2-inpainting")])
def test_a_hires_checkpoint_of_another_kind_runs_its_own_second_pass(checkpoints, first, hires):
    """A1111 samples the second pass on the hires checkpoint with its own sampler wrapper and image conditioning
    (an inpainting model's full mask, a plain model's dummy), so any checkpoint of the same latent space serves."""
    common = dict(prompt=PROMPT, steps=3, width=64, height=64, seed=13, sampler_name="Euler")
    first_model = checkpoints.checkpoint(first, "sd_model_checkpoint")
    result = generate(Txt2ImgParams(enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", denoising_strength=0.6,
                                    hr_checkpoint_name=hires, **common), first_model,
                      resources=JobResources(checkpoints))
    same = generate(Txt2ImgParams(enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", denoising_strength=0.6,
                                  **common), first_model)
    assert result.images[0].size == (96, 96)
    assert f"Hires checkpoint: {hires} [" in result.infotexts[0]
    assert np.abs(pixels(result.images[0]).astype(int) - pixels(same.images[0]).astype(int)).max() > 8


@pytest.mark.parametrize(("sampler", "calls"), [("DDIM", 3), ("PLMS", 3), ("UniPC", 4), ("DPM fast", 2),
                                               ("LCM", 4), ("DPM++ SDE", 4), ("Euler", 4)])
def test_every_sampler_family_runs_the_whole_schedule(sd1, sampler, calls):
    """txt2img walks the whole schedule from pure noise (A1111's DDIM and PLMS visit steps − 1 timesteps, DPM fast
    with n = 4 takes two solver steps)."""
    control = JobControl()
    seen = []
    control.on_step = lambda c, info: seen.append(info["i"])
    result = generate(Txt2ImgParams(prompt=PROMPT, steps=4, width=64, height=64, seed=1, sampler_name=sampler), sd1,
                      control=control)
    assert result.images[0].size == (64, 64)
    assert control.sampling_steps == 4
    assert seen == list(range(calls))


def test_sgm_noise_multiplier(sd1):
    params = Txt2ImgParams(prompt=PROMPT, steps=2, width=64, height=64, seed=1)
    plain = generate(params, sd1)
    sgm = generate(params, sd1, options=Options(sgm_noise_multiplier=True))
    assert "SGM noise multiplier: True" in sgm.infotexts[0]
    assert not np.array_equal(pixels(plain.images[0]), pixels(sgm.images[0]))


def test_inpainting_model_txt2img_and_hires(tiny_sd1_inpainting):
    """An inpainting model gets A1111's all-repaint conditioning; its hires pass gets it at the target size (A1111
    fails there)."""
    params = Txt2ImgParams(prompt=PROMPT, steps=2, width=64, height=64, seed=1, enable_hr=True,
                           hr_upscaler="Latent", denoising_strength=0.5)
    result = generate(params, tiny_sd1_inpainting)
    assert result.images[0].size == (128, 128)
    assert "Conditional mask weight: 1.0" in result.infotexts[0]


def test_interrupt_before_the_second_pass_returns_the_first(sd1):
    control = JobControl()

    def stop_after_first_pass(c, info):
        if c.job_no == 0 and info["i"] == 2:
            c.interrupt()

    control.on_step = stop_after_first_pass
    params = Txt2ImgParams(prompt=PROMPT, steps=3, width=64, height=64, seed=1, enable_hr=True, hr_upscaler="Latent")
    result = generate(params, sd1, control=control)
    assert result.interrupted and len(result.images) == 1
    assert result.images[0].size == (64, 64)
