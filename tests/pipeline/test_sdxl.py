"""SDXL (base and inpainting) and SD2 through the library: A1111's conditioning and results, every sampler,
batches, LoRA, embeddings, diffusers folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from retouch import load_model
from retouch.conditioning import PromptContext
from retouch.models import diffusers_folder
from retouch.models.sdxl import timestep_embedding
from retouch.options import Options
from retouch.processing import StableDiffusionProcessingImg2Img, process_images, process_images_with_result
from retouch.sampling import registry
from tests.conftest import MODELS, ORACLE, need_shared
from tests.host import bound
from tests.pipeline.helpers import build_from_request, oracle, pixels, run_capturing, source_image

LATENT_TOL = bound(3e-4, 1e-3)


@pytest.fixture(scope="module")
def models():
    need_shared()
    return {name: load_model(MODELS / f"{name}.safetensors")
            for name in ("tiny-sdxl", "tiny-sdxl-inpainting", "tiny-sd2-v", "tiny-sd2-inpainting")}


@pytest.fixture(scope="module")
def sdxl(models):
    return models["tiny-sdxl"]


@pytest.mark.parametrize("case", ["150", "161", "182", "186", "193"])
def test_reference_cases(case, models):
    request, recorded = oracle(case)
    p = build_from_request(request, models[request["override_settings"]["sd_model_checkpoint"]])
    processed, samples = run_capturing(p)
    reference = pixels(Image.open(ORACLE / "cases" / f"{case}_out0.png"))
    assert np.abs(pixels(processed.images[0]) - reference).max() <= 1
    assert (samples - recorded["samples"]).abs().max() <= LATENT_TOL
    assert (p.init_latent - recorded["init_latent"]).abs().max() <= bound(1e-5, 5e-5)
    assert (p.image_conditioning - recorded["image_conditioning"]).abs().max() <= bound(1e-5, 5e-5)
    if "mask" in recorded:
        assert np.array_equal(p.mask.numpy(), recorded["mask"].reshape(p.mask.shape).numpy())
    expected_info = (ORACLE / "cases" / f"{case}_infotext0.txt").read_text()
    assert processed.infotexts[0].rsplit("Version: ", 1)[0] == expected_info.rsplit("Version: ", 1)[0]


@pytest.mark.parametrize("case", ["150", "161", "182", "186", "193"])
def test_conditioning_matches_a1111(case, models):
    request, recorded = oracle(case)
    model = models[request["override_settings"]["sd_model_checkpoint"]]
    size = dict(width=request["width"], height=request["height"])
    cond = model.encode_prompts([request["prompt"]], PromptContext(Options(), **size))
    uncond = model.encode_prompts([request["negative_prompt"]], PromptContext(Options(), **size, is_negative=True))
    assert (cond.crossattn[0] - recorded["cond_0"]).abs().max() <= bound(3e-5, 5e-4)
    assert (uncond.crossattn[0] - recorded["uncond_0"]).abs().max() <= bound(3e-5, 5e-4)
    if model.is_sdxl:
        assert (cond.vector[0] - recorded["cond_vector_0"]).abs().max() <= 1e-5
        assert (uncond.vector[0] - recorded["uncond_vector_0"]).abs().max() <= 1e-5
    else:
        assert cond.vector is None


def test_empty_negative_prompt_is_zero_text_but_keeps_the_size_parts(sdxl):
    context = PromptContext(Options(), 96, 64, is_negative=True)
    empty = sdxl.encode_prompts([""], context)
    pooled = sdxl.text_encoder_2.projection.shape[0]
    assert not empty.crossattn.any() and not empty.vector[:, :pooled].any()
    assert empty.vector[:, pooled:].abs().sum() > 0
    # A schedule that is empty only at some steps is encoded for real (A1111 zeroes only all-empty texts).
    edited = sdxl.encode_prompts(["", "blurry"], context)
    assert edited.crossattn[0].abs().sum() > 0
    assert sdxl.encode_prompts([""], PromptContext(Options(), 96, 64)).crossattn.abs().sum() > 0  # positive


def test_size_and_crop_embeddings(sdxl):
    options = Options().with_overrides({"sdxl_crop_top": 16, "sdxl_crop_left": 8})
    vector = sdxl.encode_prompts(["a cat"], PromptContext(options, width=96, height=64)).vector[0]
    pooled = sdxl.text_encoder_2.projection.shape[0]
    parts = vector[pooled:].reshape(3, 2 * 256)
    for part, (a, b) in zip(parts, [(64, 96), (16, 8), (64, 96)], strict=True):  # (height, width), (top, left)
        assert torch.equal(part, timestep_embedding(torch.tensor([a, b]), 256).reshape(-1))


def job(model, **kwargs) -> StableDiffusionProcessingImg2Img:
    base = dict(init_images=[source_image(64, 64)], prompt="a red cat", negative_prompt="blurry", steps=4,
                denoising_strength=0.6, seed=5, width=64, height=64, do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return StableDiffusionProcessingImg2Img(sd_model=model, **base)


@pytest.mark.parametrize("spec", registry.SAMPLERS, ids=lambda s: s.name)
def test_every_sampler_runs_on_sdxl_reproducibly(sdxl, spec):
    first = process_images(job(sdxl, sampler_name=spec.name, steps=8))
    again = process_images(job(sdxl, sampler_name=spec.name, steps=8))
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert f"Sampler: {spec.name}," in first.infotexts[0]
    plain = pixels(job(sdxl).init_images[0])
    assert np.abs(pixels(first.images[0]) - plain).mean() > 1  # it changed the picture


def test_a_batch_equals_its_images_made_alone(sdxl):
    options = {"deterministic_batches": True}
    batch = process_images(job(sdxl, batch_size=2, seed=40, prompt="a cat [dog:bird:2]", override_settings=options))
    for i in range(2):
        single = process_images(job(sdxl, seed=40 + i, prompt="a cat [dog:bird:2]", override_settings=options))
        assert np.array_equal(pixels(batch.images[i]), pixels(single.images[0]))


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_sdxl_inpainting_only_masked_every_fill(models, fill):
    model = models["tiny-sdxl-inpainting"]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 40, 40))
    kwargs = dict(mask=mask, inpainting_fill=fill, inpaint_full_res=True, inpaint_full_res_padding=8, mask_blur=2)
    p = job(model, **kwargs)
    processed = process_images(p)
    out, src = pixels(processed.images[0]), pixels(p.init_images[0])
    assert np.array_equal(out[:8], src[:8]) and np.abs(out[20:36, 20:36] - src[20:36, 20:36]).mean() > 1
    assert "Conditional mask weight: 1.0" in processed.infotexts[0]
    assert set(torch.unique(p.image_conditioning[:, 0]).tolist()) <= {0.0, 1.0}  # SDXL always rounds the mask


def test_prompt_length_break_and_emphasis_reach_both_encoders(sdxl):
    context = PromptContext(Options(), 64, 64)
    long = sdxl.encode_prompts(["cat, " * 50 + "BREAK dog"], context)
    assert long.crossattn.shape == (1, 77 * 3, 64)
    plain, weighted = (sdxl.encode_prompts([p], context).crossattn for p in ("a cat", "a (cat:1.5)"))
    assert (plain[..., :32] - weighted[..., :32]).abs().max() > 1e-3  # CLIP-L part
    assert (plain[..., 32:] - weighted[..., 32:]).abs().max() > 1e-3  # OpenCLIP part


def test_clip_skip_reaches_only_sdxl_clip_l_and_only_with_sdxl_clip_l_skip(sdxl):
    def encode(**overrides):
        context = PromptContext(Options().with_overrides(overrides), 64, 64)
        return sdxl.encode_prompts(["a red cat"], context).crossattn[0]

    default = encode()
    assert torch.equal(encode(CLIP_stop_at_last_layers=3), default)  # A1111 ignores Clip skip on SDXL by default
    assert torch.equal(encode(sdxl_clip_l_skip=True, CLIP_stop_at_last_layers=2), default)  # its own layer is -2
    skipped = encode(sdxl_clip_l_skip=True, CLIP_stop_at_last_layers=3)
    assert torch.equal(skipped[:, 32:], default[:, 32:])  # OpenCLIP's half is never skipped
    clip_l = sdxl.text_encoder
    ids = clip_l.tokenizer("a red cat", add_special_tokens=False)["input_ids"]
    eos = clip_l.tokenizer.eos_token_id
    tokens = torch.tensor([[clip_l.tokenizer.bos_token_id, *ids] + [eos] * (76 - len(ids))])
    with torch.inference_mode():
        third_from_last = clip_l.transformer(input_ids=tokens, output_hidden_states=True).hidden_states[-3][0]
    assert (skipped[:, :32] - third_from_last).abs().max() <= 1e-6
    assert (skipped[:, :32] - default[:, :32]).abs().max() > 1e-3


def test_sdxl_lora_patches_unet_and_both_text_encoders(sdxl, tmp_path):
    from retouch.networks.synthetic import write_random_network

    write_random_network(tmp_path / "xl.safetensors", sdxl.extra_networks.layers, scale=0.3, rank=4)
    model = load_model(MODELS / "tiny-sdxl.safetensors", lora_dir=tmp_path)
    plain = process_images(job(model))
    with_lora = process_images(job(model, prompt="a red cat <lora:xl:1>"))
    zero = process_images(job(model, prompt="a red cat <lora:xl:0>"))
    assert np.abs(pixels(with_lora.images[0]) - pixels(plain.images[0])).mean() > 1
    assert np.array_equal(pixels(zero.images[0]), pixels(plain.images[0]))
    assert "Lora hashes: \"xl: " in with_lora.infotexts[0]
    layers = model.extra_networks.layers
    names = {name for name in layers if name.startswith(("0_", "1_"))}
    assert any(n.startswith("0_transformer_text_model") for n in names)
    assert any(n.startswith("1_model_transformer_resblocks") for n in names)
    # the text encoders were patched: the conditioning with the LoRA differs in both parts
    from retouch.pipeline.networks import JobNetworks

    networks = JobNetworks(model.extra_networks, Options())
    texts, activation = networks.batch(["a cat <lora:xl:1>"])
    with model.extra_networks.patcher.applied(activation.networks):
        patched = model.encode_prompts(texts, PromptContext(Options(), 64, 64))
    unpatched = model.encode_prompts(texts, PromptContext(Options(), 64, 64))
    assert (patched.crossattn[..., :32] - unpatched.crossattn[..., :32]).abs().max() > 1e-4
    assert (patched.crossattn[..., 32:] - unpatched.crossattn[..., 32:]).abs().max() > 1e-4
    assert (patched.vector - unpatched.vector).abs().max() > 1e-4


def test_sdxl_embedding_puts_clip_l_and_clip_g_vectors_in_place(sdxl, tmp_path):
    """An embedding whose vectors are the token embeddings of "cat" in each encoder encodes as "cat"."""
    cat_l, cat_g = (e.tokenize(["cat"])[0] for e in (sdxl.text_encoder, sdxl.text_encoder_2))
    vectors = {key: encoder.transformer.embeddings.token_embedding(torch.tensor(ids)).float().clone()
               for key, encoder, ids in (("clip_l", sdxl.text_encoder, cat_l), ("clip_g", sdxl.text_encoder_2, cat_g))}
    save_file(vectors, tmp_path / "kitty.safetensors")
    save_file({"emb_params": torch.zeros(1, 768)}, tmp_path / "sd1-only.safetensors")
    model = load_model(MODELS / "tiny-sdxl.safetensors", embeddings_dir=tmp_path)
    assert set(model.embeddings.loaded) == {"kitty"} and set(model.embeddings.skipped) == {"sd1-only"}
    from retouch.pipeline.networks import JobNetworks

    networks = JobNetworks(model.extra_networks, Options())
    texts, activation = networks.batch(["a (kitty:1.2) on a mat"])
    context = PromptContext(Options(), 64, 64, find_embedding=networks.find_embedding(activation))
    with_embedding = model.encode_prompts(texts, context)
    as_words = model.encode_prompts(["a (cat:1.2) on a mat"], PromptContext(Options(), 64, 64))
    assert torch.allclose(with_embedding.crossattn, as_words.crossattn, atol=1e-5)
    assert torch.allclose(with_embedding.vector, as_words.vector, atol=1e-5)


def test_diffusers_sdxl_folder_gives_the_same_pictures(sdxl, tmp_path):
    diffusers_folder.save(sdxl, tmp_path / "tiny-sdxl")
    folder_model = load_model(tmp_path / "tiny-sdxl")
    assert folder_model.family == "SDXL" and folder_model.text_encoder_2 is not None
    a, b = (process_images(job(m, sampler_name="DPM++ 2M")) for m in (sdxl, folder_model))
    assert np.array_equal(pixels(a.images[0]), pixels(b.images[0]))


def test_a_separate_vae_replaces_the_sdxl_vae(sdxl, tmp_path):
    from retouch.models.ldm_layout import vae_to_ldm

    weights = {k: v * 1.01 if v.is_floating_point() else v for k, v in vae_to_ldm(sdxl.vae, prefix="").items()}
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "xl-vae.safetensors")
    with_vae = load_model(MODELS / "tiny-sdxl.safetensors", vae=tmp_path / "xl-vae.safetensors")
    ours, theirs = process_images(job(sdxl)), process_images(job(with_vae))
    assert np.abs(pixels(ours.images[0]) - pixels(theirs.images[0])).max() > 0
    assert "VAE: xl-vae.safetensors" in theirs.infotexts[0] and "VAE hash: " in theirs.infotexts[0]


def test_sd2_v_batches_and_clip_skip_is_ignored(models):
    model = models["tiny-sd2-v"]
    skip = process_images(job(model, override_settings={"CLIP_stop_at_last_layers": 2}))
    plain = process_images(job(model))
    assert np.array_equal(pixels(skip.images[0]), pixels(plain.images[0]))  # A1111 v1.10.1 ignores it for SD2
    assert "Clip skip: 2" in skip.infotexts[0]
    _, result = process_images_with_result(job(model, batch_size=2, override_settings={"deterministic_batches": True}))
    _, single = process_images_with_result(job(model, seed=6))
    assert torch.equal(result.latents[0][1], single.latents[0][0])


def a1111_align_your_steps(levels: list[float], n: int) -> torch.Tensor:
    """A1111 v1.10.1's ``get_align_your_steps_sigmas``: the family's 11 levels, log-linearly interpolated to n."""
    if n == len(levels):
        return torch.FloatTensor([*levels, 0.0])
    xs, ys = np.linspace(0, 1, len(levels)), np.log(levels[::-1])
    return torch.FloatTensor(np.append(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy(), [0.0]))


@pytest.mark.parametrize("steps", [11, 7, 20])
def test_align_your_steps_uses_the_sdxl_levels_on_sdxl(sdxl, tiny_sd1, steps):
    from retouch.pipeline.sample import plan_job_sampling

    sdxl_levels = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
    sd15_levels = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
    for model, levels in ((sdxl, sdxl_levels), (tiny_sd1, sd15_levels)):
        job = StableDiffusionProcessingImg2Img(
            sd_model=model, init_images=[source_image()], sampler_name="Euler", scheduler="Align Your Steps",
            steps=steps, denoising_strength=1.0, width=64, height=64).resolve()
        plan = plan_job_sampling(job, model, Options(), job.params.denoising_strength)
        assert torch.equal(plan.full_sigmas, a1111_align_your_steps(levels, steps)), model.family


def test_live_previews_of_sdxl_use_sdxl_colours(sdxl, tiny_sd1):
    # A1111's cheap approximation has SDXL factors of its own; previews used SD1's for every family
    import base64
    import io

    from retouch import generate
    from retouch.control import JobControl
    from retouch.serving.previews import preview_png_b64

    a1111_sdxl = [[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163],
                  [-0.3730, -0.2499, -0.2088]]
    a1111_sd = [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
    for model, factors in ((sdxl, a1111_sdxl), (tiny_sd1, a1111_sd)):
        from retouch import Img2ImgParams

        seen: list = []
        control = JobControl(on_step=lambda c, info, seen=seen: seen.append((info["denoised"][:1].clone(),
                                                                             c.latent_format)))

        generate(Img2ImgParams(init_images=[source_image()], steps=3, width=64, height=64, sampler_name="Euler"),
                 model, control=control)
        latent, latent_format = seen[-1]
        png = Image.open(io.BytesIO(base64.b64decode(preview_png_b64(latent, latent_format))))
        rgb = torch.einsum("...lxy,lr -> ...rxy", latent, torch.tensor(factors))
        expected = (255.0 * torch.clamp((rgb + 1) / 2, 0, 1)[0].permute(1, 2, 0).numpy()).astype(np.uint8)
        assert np.array_equal(np.array(png), expected), model.family
