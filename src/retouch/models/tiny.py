"""The bundled tiny model: an SD1-architecture model small enough to run anywhere in seconds.

Its weights are made here, deterministically (fixed-seed draws in a fixed order), and written once
to the cache in the original LDM single-file layout with a ``.yaml`` beside it, so that
``load_model("tiny")`` goes through exactly the path real checkpoints take. The outputs are not
pretty pictures (the weights are random), but every stage of the pipeline runs for real.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import torch
import yaml
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from retouch.models.ldm_config import LdmConfig
from retouch.models.ldm_layout import clip_to_ldm, open_clip_to_ldm, schedule_buffers, unet_to_ldm, vae_to_ldm
from retouch.models.paths import bundled_path

logger = logging.getLogger(__name__)

TINY_VERSION = 1  # bump when the recipe changes, so caches are rebuilt
TEXT_ENCODER_DIR = "tiny-clip"
TINY_CLIP = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
    "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}


VARIANTS = {"": "v1-inference.yaml", "inpainting": "v1-inpainting-inference.yaml",
            "pix2pix": "instruct-pix2pix.yaml"}


def tiny_ldm_config(variant: str = "") -> dict:
    """The LDM yaml of the tiny model (the SD1 description, shrunk); ``variant``: "", "inpainting", "pix2pix"."""
    name = VARIANTS[variant]
    raw = copy.deepcopy(LdmConfig.bundled(name).raw)
    params = raw["model"]["params"]
    params["unet_config"]["params"].update(
        model_channels=32, attention_resolutions=[1, 2], num_res_blocks=1, channel_mult=[1, 2], num_heads=2,
        context_dim=32)
    params["first_stage_config"]["params"]["ddconfig"].update(ch=32, ch_mult=[1, 1, 2, 2], num_res_blocks=1,
                                                              resolution=64)
    params["cond_stage_config"]["params"] = {"version": TEXT_ENCODER_DIR}
    return raw


def ensure_tiny_checkpoint(cache: Path, variant: str = "") -> Path:
    """Path of the tiny checkpoint in ``cache``; written first if missing (atomically)."""
    stem = f"retouch-tiny-{variant + '-' if variant else ''}v{TINY_VERSION}"
    folder = cache / "tiny"
    path = folder / f"{stem}.safetensors"
    if path.is_file() and path.with_suffix(".yaml").is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    te_dir = folder / TEXT_ENCODER_DIR
    te_dir.mkdir(exist_ok=True)
    (te_dir / "config.json").write_text(json.dumps(TINY_CLIP, indent=2))
    raw = tiny_ldm_config(variant)
    path.with_suffix(".yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    state = build_ldm_state_dict(raw, TINY_CLIP)
    write_checkpoint(path, state)
    logger.info("wrote the tiny model to %s", path)
    return path


def build_tiny_state_dict(raw: dict) -> dict[str, torch.Tensor]:
    return build_ldm_state_dict(raw, TINY_CLIP)


def build_ldm_state_dict(raw: dict, clip_config: dict, seed: int = 20240727) -> dict[str, torch.Tensor]:
    """Deterministic random weights for an SD1-style LDM description, in the LDM single-file layout.

    Parameters are stored in fp16 (as most published checkpoints), schedule buffers in fp32.
    Also used for the SD1.5-sized checkpoints of tests and benchmarks.
    """
    config = LdmConfig(raw=raw, source="generated")
    with init_empty_weights():
        unet = UNet2DConditionModel(**config.unet_config({}))
        vae = AutoencoderKL(**config.vae_config({}))
        text = CLIPTextModel(CLIPTextConfig(**clip_config))
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for module, to_ldm in ((unet, unet_to_ldm), (vae, vae_to_ldm), (text, clip_to_ldm)):
        fill_deterministic(module, generator)
        state.update(to_ldm(module))
        del module
    state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    state.update(schedule_buffers(config.alphas_cumprod()))
    return {k: v.contiguous() for k, v in state.items()}


def write_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` as a safetensors file, atomically."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(state, tmp, metadata={"format": "pt"})
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def write_sd15_sized_checkpoint(path: Path, seed: int = 1) -> Path:
    """A random-weight checkpoint with SD1.5's exact architecture, in the LDM layout (no yaml)."""
    clip = json.loads(bundled_path("text_encoders", "clip-vit-large-patch14", "config.json").read_text())
    raw = LdmConfig.bundled("v1-inference.yaml").raw
    return write_checkpoint(path, build_ldm_state_dict(raw, clip, seed))


def write_sdxl_sized_checkpoint(path: Path, seed: int = 2) -> Path:
    """A random-weight checkpoint with SDXL base's exact architecture (2.6 B UNet parameters, CLIP-L, OpenCLIP
    bigG), in the original single-file layout without a yaml; made one network at a time, in fp16."""
    config = LdmConfig.bundled("sd_xl_base.yaml")
    clip_l, clip_g = config.text_encoders
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    with init_empty_weights():
        unet = UNet2DConditionModel(**config.unet_config({}))
    fill_deterministic(unet, generator, torch.float16)
    state.update(unet_to_ldm(unet))
    del unet
    with init_empty_weights():
        vae = AutoencoderKL(**config.vae_config({}))
        text_l, text_g = CLIPTextModel(CLIPTextConfig(**clip_l.config)), CLIPTextModel(CLIPTextConfig(**clip_g.config))
    for module in (vae, text_l, text_g):
        fill_deterministic(module, generator, torch.float16)
    state.update(vae_to_ldm(vae))
    state.update({k.replace("cond_stage_model.", "conditioner.embedders.0."): v for k, v in clip_to_ldm(text_l).items()})
    projection = (torch.randn(clip_g.config["projection_dim"], clip_g.config["hidden_size"], generator=generator)
                  / clip_g.config["hidden_size"] ** 0.5).half()
    state.update(open_clip_to_ldm(text_g, projection, "conditioner.embedders.1.model."))
    return write_checkpoint(path, {k: v.contiguous() for k, v in state.items()})


def fill_deterministic(module: torch.nn.Module, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> None:
    """Give every parameter a fixed-seed value: scaled normal weights, unit norms, zero biases."""
    params = dict(module.named_parameters())
    for name in sorted(params):
        p = params[name]
        if "norm" in name and name.endswith("weight"):
            value = torch.ones(p.shape)
        elif name.endswith("bias") or "embedding" in name:
            value = torch.randn(p.shape, generator=generator) * 0.02
        else:
            fan_in = max(1, p[0].numel()) if p.ndim > 1 else p.shape[0]
            value = torch.randn(p.shape, generator=generator) / fan_in**0.5
        module.get_submodule(name.rsplit(".", 1)[0]).register_parameter(
            name.rsplit(".", 1)[1], torch.nn.Parameter(value.to(dtype), requires_grad=False))
