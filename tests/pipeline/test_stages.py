"""The pipeline's stages called directly, the denoiser stack piece by piece, and generate() against the facade.

All on the bundled tiny model (made in the repo), so these run without ../shared.
"""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from retouch import Img2ImgParams, Options, generate
from retouch.conditioning import (
    Conditioning,
    PromptContext,
    get_learned_conditioning,
    get_multicond_learned_conditioning,
)
from retouch.control import JobControl, JobHooks
from retouch.pipeline import (
    Batch,
    encode_conditioning,
    initialize,
    plan_job_sampling,
    prepare_inputs,
    sample_batch,
)
from retouch.processing import StableDiffusionProcessingImg2Img, process_images
from retouch.sampling import registry
from retouch.sampling.guidance import CFGDenoiser, Guidance
from retouch.sampling.inpaint import InpaintBlend, Interruptible, Masked
from retouch.sampling.plan import SamplerSettings, plan_sampling, run_sampler, start_latents
from retouch.sampling.schedules import SCHEDULERS, NoiseSchedule
from tests.pipeline.helpers import pixels, source_image


def params(**kw) -> Img2ImgParams:
    values = dict(prompt="a cat", negative_prompt="blurry", init_images=[source_image()], width=64, height=64,
                  steps=8, seed=11, sampler_name="Euler a")
    values.update(kw)
    return Img2ImgParams(**values)


def half_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    return mask


# -- validation at the edge -------------------------------------------------------------------
def test_validate_resolves_names_and_expands_seeds():
    job = params(sampler_name="DPM++ 2M Karras", seed=100, batch_size=2, n_iter=2).validate()
    assert job.sampler is registry.find_sampler("DPM++ 2M") and job.scheduler.label == "Karras"
    assert job.seeds == [100, 101, 102, 103] and len(job.subseeds) == 4
    random_job = params(seed=-1).validate()
    assert 0 <= random_job.seeds[0] < 4294967294


def test_validate_refuses_before_any_work():
    with pytest.raises(ValueError, match="sampler_name: unknown sampler 'Nope'"):
        params(sampler_name="Nope").validate()
    with pytest.raises(ValueError, match="images do not match"):
        params(image_mask=half_mask(), inpaint_full_res=False, width=68).validate()


def test_generate_refuses_unsupported_options(bundled_tiny):
    with pytest.raises(ValueError, match="sd_vae_decode_method: not supported"):
        generate(params(), bundled_tiny, options=Options(sd_vae_decode_method="TAESD"))


# -- stages -----------------------------------------------------------------------------------
def test_prepare_inputs_is_pure_image_work():
    prepared = prepare_inputs(params(image_mask=half_mask(), inpaint_full_res=False, mask_blur_x=0, mask_blur_y=0),
                              Options())
    assert prepared.images[0].size == (64, 64) and prepared.image_mask is not None
    assert prepared.extra_params == {"Masked content": "fill"}  # mask_blur 0: no "Mask blur" key
    assert np.array(prepared.mask_for_overlay)[:, :32].min() == 255  # doubled mask: repaint side saturated


def test_initialize_builds_the_blend_from_the_latent_mask(bundled_tiny):
    job = params(image_mask=half_mask(), inpaint_full_res=False, mask_blur_x=0, mask_blur_y=0, inpainting_fill=3).validate()
    state = initialize(job, bundled_tiny, Options(), JobHooks())
    assert state.blend is not None and state.init_latent.shape == (1, 4, 8, 8)
    assert torch.equal(state.blend.keep, 1 - state.blend.repaint)
    assert (state.init_latent[0][state.blend.repaint.bool()] == 0).all()  # latent nothing
    assert state.extra_params["Denoising strength"] == 0.75 and state.extra_params["Masked content"] == "latent nothing"


def test_plan_is_computed_once_and_orders_its_infotext_keys(bundled_tiny):
    job = params(sampler_name="DPM++ 2M", scheduler="Exponential", denoising_strength=0.5).validate()
    plan = plan_job_sampling(job, bundled_tiny, Options(img2img_extra_noise=0.2, sd_noise_schedule="Zero Terminal SNR"),
                             job.params.denoising_strength)
    assert list(plan.extra_params) == ["Noise Schedule", "Schedule type", "Extra noise"]
    assert plan.steps_to_run == 5 and len(plan.schedule) == 6  # t_enc = int(0.5·8) = 4: 5 steps, 6 σ (last 0)


def test_stages_compose_to_what_generate_returns(bundled_tiny):
    job = params().validate()
    options = Options()
    init = initialize(job, bundled_tiny, options, JobHooks())
    conds = encode_conditioning(bundled_tiny, job, options, ["a cat"], ["blurry"])
    plan = plan_job_sampling(job, bundled_tiny, options, job.params.denoising_strength)
    sampled = sample_batch(bundled_tiny, job, options, plan, init, conds, Batch(0, ["a cat"], ["blurry"], job.seeds,
                                                                                 job.subseeds), JobControl())
    result = generate(job, bundled_tiny, options=options)
    assert torch.equal(sampled.latents, result.latents[0]) and not sampled.interrupted


def test_generate_equals_process_images(bundled_tiny):
    result = generate(params(), bundled_tiny)
    p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, **{f.name: getattr(params(), f.name)
                                                                    for f in dataclasses.fields(Img2ImgParams)})
    processed = process_images(p)
    assert np.array_equal(pixels(result.images[0]), pixels(processed.images[0]))
    assert result.infotexts == processed.infotexts and result.seeds == processed.all_seeds
    assert torch.equal(p.init_latent, result.init.init_latent)  # A1111's state names on the facade


def test_facade_init_and_sample_run_the_same_stages(bundled_tiny):
    p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, prompt="a cat", negative_prompt="blurry",
                                         init_images=[source_image()], width=64, height=64, steps=8, seed=11,
                                         sampler_name="Euler a", image_mask=half_mask(), inpaint_full_res=False)
    p.init(["a cat"], [11], [5])
    assert p.mask is not None and p.nmask is not None and p.overlay_images and p.mask_for_overlay is not None
    context = PromptContext(p.job_options, 64, 64)
    c = get_multicond_learned_conditioning(bundled_tiny, ["a cat"], 8, context)
    uc = get_learned_conditioning(bundled_tiny, ["blurry"], 8, dataclasses.replace(context, is_negative=True))
    latents = p.sample(c, uc, [11], [5], 0.0, ["a cat"])
    keep = p.mask.bool()
    assert torch.equal(latents[0][keep], p.init_latent[0][keep])  # the final blend
    result = generate(dataclasses.replace(p.resolve(), seeds=[11], subseeds=[5]), bundled_tiny)
    assert torch.equal(latents, result.latents[0])


# -- the denoiser stack -----------------------------------------------------------------------
class ConstantModel:
    """A model denoiser returning ``x·scale + row index``-free constants: cond rows 1, uncond rows 0."""

    def __call__(self, x, sigma, cond, concat=None):
        return cond.crossattn[:, :1, :1].reshape(-1, 1, 1, 1).expand_as(x).clone()

    def predict_x0(self, x, out, sigma):
        return out


def guidance(scale=3.0, batch=1) -> Guidance:
    from retouch.conditioning import (
        ComposableScheduledPromptConditioning,
        MulticondLearnedConditioning,
        ScheduledPromptConditioning,
    )

    cond = Conditioning(torch.ones(77, 4))
    uncond = Conditioning(torch.zeros(77, 4))
    c = MulticondLearnedConditioning([[ComposableScheduledPromptConditioning([ScheduledPromptConditioning(1, cond)])]]
                                     * batch)
    return Guidance(c, [[ScheduledPromptConditioning(1, uncond)]] * batch, scale)


def test_cfg_combines_and_reports_the_uncond_output():
    cfg = CFGDenoiser(ConstantModel(), guidance(scale=3.0), Options(), total_steps=4)
    x, sigma = torch.zeros(1, 4, 2, 2), torch.ones(1)
    denoised, uncond = cfg.with_uncond(x, sigma)
    assert torch.all(denoised == 3.0) and torch.all(uncond == 0.0)  # u + 3·(c − u)
    assert cfg.step == 1 and torch.all(cfg.last_prediction == 1.0)  # the cond row's prediction


def test_masked_blends_output_or_input():
    original = torch.full((1, 1, 1, 2), 5.0)
    repaint = torch.tensor([[[1.0, 0.0]]])
    blend = InpaintBlend(original, repaint, 1 - repaint)
    seen = []

    class Echo:
        def __call__(self, x, sigma):
            seen.append(x.clone())
            return x + 1

        def with_uncond(self, x, sigma):
            return self(x, sigma), x

    x = torch.zeros(1, 1, 1, 2)
    after = Masked(Echo(), blend, before=False)(x, torch.ones(1))
    assert after.tolist() == [[[[1.0, 5.0]]]]  # output blended: kept pixel is the original
    before = Masked(Echo(), blend, before=True)(x, torch.ones(1))
    assert seen[-1].tolist() == [[[[0.0, 5.0]]]] and before.tolist() == [[[[1.0, 6.0]]]]


def test_interruptible_stops_before_the_call():
    from retouch.control import Interrupted

    control = JobControl()
    denoiser = Interruptible(lambda x, s: x, control.should_stop)
    assert torch.equal(denoiser(torch.ones(1), torch.ones(1)), torch.ones(1))
    control.skipped = True
    with pytest.raises(Interrupted):
        denoiser(torch.ones(1), torch.ones(1))


@pytest.mark.parametrize("spec", registry.SAMPLERS, ids=lambda s: s.name)
def test_every_sampler_in_the_table_runs_through_its_call_style(spec):
    """Dispatch is by the spec: each sampler is called the way its function expects, with CFG around a toy model."""
    alphas_cumprod = torch.linspace(0.9991, 0.0047, 1000)
    settings = SamplerSettings(spec, SCHEDULERS[0], steps=6, denoising_strength=0.8)
    plan = plan_sampling(settings, NoiseSchedule(alphas_cumprod), Options())
    cfg = CFGDenoiser(_ToyModel(plan), guidance(scale=2.0), Options(), total_steps=spec.total_steps(6))
    x = start_latents(plan, torch.zeros(1, 4, 2, 2), torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0)))
    noise = torch.Generator().manual_seed(1)
    out = run_sampler(plan, cfg, x, noise_sampler=lambda s, n: torch.randn(1, 4, 2, 2, generator=noise),
                      callback=None)
    assert out.shape == (1, 4, 2, 2) and torch.isfinite(out).all() and cfg.step >= 1


class _ToyModel:
    """Predicts x₀ = 0.5 (in whichever form the plan's family wants)."""

    def __init__(self, plan):
        self.timesteps = plan.spec.uses_timesteps
        self.alphas_cumprod = plan.alphas_cumprod

    def __call__(self, x, sigma, cond, concat=None):
        if not self.timesteps:
            return torch.full_like(x, 0.5)
        a = self.alphas_cumprod[sigma.long()].reshape(-1, 1, 1, 1)
        return (x - a.sqrt() * 0.5) / (1 - a).sqrt()  # ε for x₀ = 0.5

    def predict_x0(self, x, out, sigma):
        return out
