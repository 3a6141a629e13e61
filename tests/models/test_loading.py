"""Loading real checkpoints from disk: LDM single files, yaml handling, diffusers folders, VAEs."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retouch import Options, load_model
from retouch.models import CheckpointError
from retouch.models.ldm_layout import clip_to_ldm, unet_to_ldm, vae_to_ldm
from tests.conftest import MODELS, ORACLE, need_shared
from tests.host import bound


def oracle_tensors(case):
    return load_file(ORACLE / "intermediates" / f"{case}_tensors.safetensors")


def oracle_request(case):
    return json.loads((ORACLE / "cases" / f"{case}.json").read_text())["request"]


def test_shared_tiny_checkpoints_load_with_a1111_hashes(tiny_sd1, tiny_sd1_inpainting):
    assert (tiny_sd1.name, tiny_sd1.short_hash) == ("tiny-sd1", "0f6bfda938")
    assert tiny_sd1.title == "tiny-sd1.safetensors [0f6bfda938]"
    assert (tiny_sd1_inpainting.short_hash, tiny_sd1_inpainting.is_inpainting) == ("db38ebb77f", True)
    assert tiny_sd1.family == "SD1" and tiny_sd1.parameterization == "eps" and not tiny_sd1.is_inpainting
    assert tiny_sd1.scale_factor == 0.18215
    assert tiny_sd1.unet.config.in_channels == 4 and tiny_sd1_inpainting.unet.config.in_channels == 9
    assert tiny_sd1.config_source.endswith("tiny-sd1.yaml")


def test_alphas_cumprod_from_checkpoint_buffer_matches_yaml_schedule(tiny_sd1):
    stored = load_file(MODELS / "tiny-sd1.safetensors")["alphas_cumprod"]
    assert torch.equal(tiny_sd1.alphas_cumprod, stored)
    from retouch.models.ldm_config import LdmConfig

    computed = LdmConfig.from_yaml(MODELS / "tiny-sd1.yaml").alphas_cumprod()
    assert torch.allclose(computed, stored, rtol=1e-6)
    # A1111's full schedule for case 002 (10 steps, Euler) starts at sigma_max of this ᾱ
    sigma_max = ((1 - stored[-1]) / stored[-1]) ** 0.5
    assert torch.isclose(oracle_tensors("002")["get_sigmas_full"][0].float(), sigma_max, rtol=1e-5)


@pytest.mark.parametrize("case", ["002", "014"])
def test_conditioning_equals_a1111(tiny_sd1, case):
    request, recorded = oracle_request(case), oracle_tensors(case)
    cond = tiny_sd1.get_learned_conditioning([request["prompt"]])
    uncond = tiny_sd1.get_learned_conditioning([request["negative_prompt"]])
    assert cond.shape == (1, 77, 32)
    assert (cond[0] - recorded["cond_0"]).abs().max() <= bound(1e-5, 5e-4)
    assert (uncond[0] - recorded["uncond_0"]).abs().max() <= bound(1e-5, 5e-4)


def test_conditioning_options_change_the_result(tiny_sd1):
    prompt = ["a (red:1.3) cat"]
    original = tiny_sd1.get_learned_conditioning(prompt)
    assert not torch.equal(original, tiny_sd1.get_learned_conditioning(prompt, Options(emphasis="No norm")))
    assert not torch.equal(original, tiny_sd1.get_learned_conditioning(prompt, Options(CLIP_stop_at_last_layers=2)))


def test_ldm_layout_round_trip_is_bit_exact(tiny_sd1):
    original = load_file(MODELS / "tiny-sd1.safetensors")
    rebuilt = {**unet_to_ldm(tiny_sd1.unet), **vae_to_ldm(tiny_sd1.vae), **clip_to_ldm(tiny_sd1.text_encoder.transformer)}
    networks = {k: v for k, v in original.items() if "." in k}  # skip schedule buffers
    assert set(rebuilt) == set(networks)
    for key, tensor in networks.items():
        assert torch.equal(rebuilt[key].to(tensor.dtype), tensor), key


def save_as_diffusers(model, folder):
    model.unet.save_pretrained(folder / "unet")
    model.vae.save_pretrained(folder / "vae")
    model.text_encoder.transformer.save_pretrained(folder / "text_encoder")
    model.text_encoder.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon"}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


def test_diffusers_folder_gives_identical_outputs(tiny_sd1, tmp_path):
    folder = tmp_path / "tiny-diffusers"
    save_as_diffusers(tiny_sd1, folder)
    loaded = load_model(folder)
    assert loaded.name == "tiny-diffusers" and loaded.family == "SD1" and loaded.parameterization == "eps"
    prompts = ["a (red:1.3) cat, [blue] mat", ""]
    assert torch.equal(loaded.get_learned_conditioning(prompts), tiny_sd1.get_learned_conditioning(prompts))
    assert torch.allclose(loaded.alphas_cumprod, tiny_sd1.alphas_cumprod, rtol=1e-6)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    image = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    with torch.inference_mode():
        for net in ("unet",):
            a = getattr(loaded, net)(x, torch.tensor([500]), encoder_hidden_states=context).sample
            b = getattr(tiny_sd1, net)(x, torch.tensor([500]), encoder_hidden_states=context).sample
            assert torch.equal(a, b)
        assert torch.equal(loaded.vae.decode(x).sample, tiny_sd1.vae.decode(x).sample)
        assert torch.equal(loaded.vae.encode(image).latent_dist.mean, tiny_sd1.vae.encode(image).latent_dist.mean)


def test_separate_vae_in_ldm_and_diffusers_layout(tiny_sd1, tmp_path):
    from safetensors.torch import save_file

    # A1111-style standalone VAE: LDM keys without the first_stage_model. prefix, scaled ×2
    weights = {k: v * 2 for k, v in vae_to_ldm(tiny_sd1.vae, prefix="").items()}
    vae_file = tmp_path / "other.vae.safetensors"
    save_file(weights, vae_file)
    model = load_model(MODELS / "tiny-sd1.safetensors", vae=vae_file)
    assert model.vae_info.name == "other.vae.safetensors" and len(model.vae_info.short_hash) == 10
    assert torch.equal(model.vae.decoder.conv_in.weight, tiny_sd1.vae.decoder.conv_in.weight * 2)
    folder = tmp_path / "vae-folder"
    model.vae.save_pretrained(folder)
    again = load_model(MODELS / "tiny-sd1.safetensors", vae=folder)
    assert torch.equal(again.vae.decoder.conv_in.weight, model.vae.decoder.conv_in.weight)
    # a full checkpoint works as a VAE source (its first_stage_model.* part) …
    full = load_model(MODELS / "tiny-sd1.safetensors", vae=MODELS / "tiny-sd1.safetensors")
    assert torch.equal(full.vae.decoder.conv_in.weight, tiny_sd1.vae.decoder.conv_in.weight)
    # … a file without VAE weights does not
    text_only = tmp_path / "text.safetensors"
    save_file(clip_to_ldm(tiny_sd1.text_encoder.transformer), text_only)
    with pytest.raises(CheckpointError, match="text.safetensors: not a VAE"):
        load_model(MODELS / "tiny-sd1.safetensors", vae=text_only)


def test_bundled_tiny_model_is_deterministic_and_uses_the_single_file_path(bundled_tiny, private_cache):
    from retouch.models.tiny import build_tiny_state_dict, tiny_ldm_config

    assert bundled_tiny.path.suffix == ".safetensors" and bundled_tiny.path.with_suffix(".yaml").is_file()
    assert bundled_tiny.path.is_relative_to(private_cache)
    stored = load_file(bundled_tiny.path)
    again = build_tiny_state_dict(tiny_ldm_config())
    assert set(stored) == set(again) and all(torch.equal(stored[k], again[k]) for k in stored)
    assert load_model("tiny").short_hash == bundled_tiny.short_hash
    inpainting = load_model("tiny-inpainting")
    assert inpainting.is_inpainting and inpainting.unet.config.in_channels == 9


def test_hash_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    import hashlib
    import os

    from retouch.models.checkpoint import file_sha256

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f, tmp_path) == hashlib.sha256(b"abc").hexdigest()
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    file_sha256(f, tmp_path)
    assert calls == []  # served from the cache
    f.write_bytes(b"abcd")
    os.utime(f, ns=(1, 1))
    assert file_sha256(f, tmp_path) == real(b"abcd").hexdigest() and calls == [1]


@pytest.mark.parametrize(("channels", "config"), [(4, "sd_xl_base.yaml"), (9, "sd_xl_inpaint.yaml")])
def test_sdxl_without_a_yaml_is_recognised_and_described_at_full_size(channels, config):
    """As A1111: OpenCLIP as the second embedder means SDXL; the UNet's input channels pick base or inpainting."""
    from retouch.models.detect import detect_ldm_config
    from retouch.models.ldm_config import LdmConfig

    with torch.device("meta"):
        state = {"conditioner.embedders.1.model.ln_final.weight": torch.empty(1280),
                 "model.diffusion_model.input_blocks.0.0.weight": torch.empty(320, channels, 3, 3)}
    assert detect_ldm_config(Path("x.safetensors"), state, lambda _: False) == config
    described = LdmConfig.bundled(config)
    unet = described.unet_config({})
    assert list(unet["block_out_channels"]) == [320, 640, 1280] and unet["in_channels"] == channels
    assert list(unet["transformer_layers_per_block"]) == [1, 2, 10] and unet["cross_attention_dim"] == 2048
    assert unet["class_embed_type"] == "projection" and unet["projection_class_embeddings_input_dim"] == 2816
    clip_l, clip_g = described.text_encoders
    assert (clip_l.kind, clip_l.output, clip_l.layer_idx, clip_l.config["hidden_size"]) == ("clip", "hidden", 11, 768)
    assert (clip_g.kind, clip_g.pooled, clip_g.config["hidden_size"], clip_g.config["num_hidden_layers"]) == \
        ("open_clip", True, 1280, 32)
    assert described.family == "SDXL" and described.scale_factor == 0.13025 and described.parameterization == "eps"


def test_sd2_bundled_open_clip_leaves_the_last_block_out():
    from retouch.models.ldm_config import LdmConfig

    (encoder,) = LdmConfig.bundled("v2-inference-v.yaml").text_encoders
    assert encoder.kind == "open_clip" and encoder.config["num_hidden_layers"] == 23
    assert encoder.config["hidden_size"] == 1024 and encoder.output == "final"


def test_an_unknown_open_clip_architecture_is_refused_by_name(tmp_path):
    need_shared()
    from retouch.models.checkpoint import CheckpointError

    yaml_text = (MODELS / "tiny-sd2-v.yaml").read_text().replace("arch: tiny-open-clip", "arch: ViT-Z-99")
    (tmp_path / "m.yaml").write_text(yaml_text)
    shutil.copy(MODELS / "tiny-sd2-v.safetensors", tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="OpenCLIP architecture 'ViT-Z-99'"):
        load_model(tmp_path / "m.safetensors")


@pytest.mark.parametrize("stray", ["transformer.resblocks.0.attn.extra_weight", "transformer.resblocks.x.ln_1.weight"])
def test_an_open_clip_tensor_the_encoder_has_no_place_for_is_refused_by_name(tmp_path, stray):
    need_shared()
    from safetensors.torch import save_file

    state = load_file(MODELS / "tiny-sd2-v.safetensors")
    state["cond_stage_model.model." + stray] = torch.zeros(4)
    save_file(state, tmp_path / "m.safetensors")
    shutil.copy(MODELS / "tiny-sd2-v.yaml", tmp_path / "m.yaml")
    shutil.copy(MODELS / "tiny-open-clip.json", tmp_path)
    with pytest.raises(CheckpointError, match=r"text encoder weights do not fit .* 1 unexpected \(e\.g\. "
                                              + stray.replace("transformer.resblocks.0.attn", "encoder.layers.0.attn")):
        load_model(tmp_path / "m.safetensors")


@pytest.mark.parametrize("shape", [(2, 32), (), (95, 32)])
def test_a_fused_open_clip_projection_of_the_wrong_shape_is_refused_by_name(tmp_path, shape):
    need_shared()
    from safetensors.torch import save_file

    state = load_file(MODELS / "tiny-sd2-v.safetensors")
    key = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
    state[key] = torch.zeros(shape)
    save_file(state, tmp_path / "m.safetensors")
    shutil.copy(MODELS / "tiny-sd2-v.yaml", tmp_path / "m.yaml")
    shutil.copy(MODELS / "tiny-open-clip.json", tmp_path)
    with pytest.raises(CheckpointError, match=r"resblocks\.0\.attn\.in_proj_weight has shape .*not three stacked projections"):
        load_model(tmp_path / "m.safetensors")


def test_sdxl_networks_written_back_give_the_file_bit_for_bit():
    """The inverse writers (used for the SDXL-sized benchmark checkpoint) round-trip the reference file."""
    need_shared()
    from retouch.models.ldm_layout import open_clip_to_ldm

    model = load_model(MODELS / "tiny-sdxl.safetensors")
    original = load_file(MODELS / "tiny-sdxl.safetensors")
    written = {**unet_to_ldm(model.unet), **vae_to_ldm(model.vae),
               **{k.replace("cond_stage_model.", "conditioner.embedders.0."): v
                  for k, v in clip_to_ldm(model.text_encoder.transformer).items()},
               **open_clip_to_ldm(model.text_encoder_2.transformer, model.text_encoder_2.projection,
                                  "conditioner.embedders.1.model.")}
    for key, tensor in written.items():
        assert key in original, key
        assert torch.equal(tensor.to(original[key].dtype), original[key]), key
    missing = {k for k in set(original) - set(written)
               if not k.endswith(("position_ids", "logit_scale", "attn_mask")) and not k.startswith("denoiser.")}
    assert not {k for k in missing if "visual" not in k}, sorted(missing)[:5]


@pytest.mark.parametrize(("native", "dtype", "vae_dtype", "warned"), [
    ({torch.float32}, torch.bfloat16, None, ["bfloat16"]),
    ({torch.float32}, torch.float32, torch.bfloat16, ["bfloat16"]),
    ({torch.float32}, torch.bfloat16, torch.float16, ["bfloat16", "float16"]),
    ({torch.float32, torch.bfloat16}, torch.bfloat16, torch.bfloat16, []),
    ({torch.float32}, torch.float32, None, []),
])
def test_a_precision_without_native_kernels_is_warned_of(monkeypatch, caplog, native, dtype, vae_dtype, warned):
    """bf16 on a CPU without AVX-512 or AMX runs through PyTorch's slow fallbacks: loading says so, once per dtype."""
    from retouch.models import loader

    monkeypatch.setattr(loader, "cpu_has_native_kernels", lambda d: d in native)
    with caplog.at_level("WARNING", logger="retouch.models.loader"):
        load_model("tiny", dtype=dtype, vae_dtype=vae_dtype)
    messages = [r.getMessage() for r in caplog.records if "native" in r.getMessage()]
    assert [m.split(" kernels")[0].rsplit(" ", 1)[1] for m in messages] == warned
    assert all("--precision fp32" in m for m in messages)
