"""Which Stable Diffusion family a single-file checkpoint holds (SD1, SD2, SDXL), from its tensor names and shapes.

Used when no ``.yaml`` sits beside the checkpoint, as A1111's ``guess_model_config_from_state_dict``:
it picks one of the LDM model descriptions bundled in ``retouch/configs/ldm``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from retouch.models.checkpoint import CheckpointError, StateDict

UNET_PREFIX = "model.diffusion_model."
UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
UNET_CONTEXT = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
CLIP_L_KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
OPEN_CLIP_KEY = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SDXL_KEY = "conditioner.embedders.1.model.ln_final.weight"

# (test, what to call it): families that are recognised and refused.
_UNSUPPORTED: list[tuple[Callable[[StateDict], bool], str]] = [
    (lambda sd: "conditioner.embedders.0.model.ln_final.weight" in sd,
     "an SDXL refiner (OpenCLIP as its only text encoder); retouch runs SDXL base and inpainting models"),
    (lambda sd: any(".joint_blocks." in k for k in sd), "SD3 (MMDiT joint_blocks)"),
    (lambda sd: any("double_blocks." in k for k in sd), "Flux (double_blocks)"),
    (lambda sd: any(k.startswith("model.diffusion_model.x_embedder") for k in sd), "a DiT/transformer model"),
    (lambda sd: "embedder.model.ln_final.weight" in sd or any(k.startswith("embedder.") for k in sd),
     "unCLIP / Stable unCLIP"),
    (lambda sd: any(k.startswith("depth_model.") for k in sd), "SD2 depth-to-image"),
    (lambda sd: any(k.startswith("lora_unet_") or k.startswith("lora_te") for k in sd), "a LoRA, not a checkpoint"),
]


def describe_layout(state: StateDict) -> str:
    """A short, human description of what a file's keys look like (for error messages)."""
    keys = list(state)
    if any(k.startswith("down_blocks.") or k.startswith("mid_block.") for k in keys):
        return "a diffusers-layout UNet/VAE (down_blocks.*); load the diffusers folder instead"
    if any(k.startswith("encoder.down.") for k in keys) and not any(k.startswith(UNET_PREFIX) for k in keys):
        return "a VAE on its own; pass it as vae= instead"
    sample = ", ".join(keys[:3])
    return f"no model.diffusion_model.* keys (first keys: {sample})"


def detect_ldm_config(path: Path, state: StateDict, is_v_prediction: Callable[[StateDict], bool]) -> str:
    """The bundled LDM config name for a checkpoint without a yaml, or a ``CheckpointError``.

    ``is_v_prediction`` decides between SD2 768-v and 512-base (A1111 runs the UNet on a probe input).
    """
    for test, what in _UNSUPPORTED:
        if test(state):
            raise CheckpointError(path, f"not supported: {what}. retouch runs SD1.x, SD2.x and SDXL models.")
    if UNET_INPUT not in state:
        raise CheckpointError(path, f"not a Stable Diffusion checkpoint in the original LDM layout: "
                                    f"{describe_layout(state)}")
    in_channels = state[UNET_INPUT].shape[1]
    if SDXL_KEY in state:
        if in_channels not in (4, 9):
            raise CheckpointError(path, f"not supported: an SDXL UNet with {in_channels} input channels "
                                        "(4 = base, 9 = inpainting)")
        return "sd_xl_inpaint.yaml" if in_channels == 9 else "sd_xl_base.yaml"
    context = state[UNET_CONTEXT].shape[1] if UNET_CONTEXT in state else None
    if OPEN_CLIP_KEY in state or context == 1024:
        if in_channels == 9:
            return "v2-inpainting-inference.yaml"
        if in_channels != 4:
            raise CheckpointError(path, f"not supported: an SD2 UNet with {in_channels} input channels")
        return "v2-inference-v.yaml" if is_v_prediction(state) else "v2-inference.yaml"
    if context not in (768, None):
        raise CheckpointError(path, f"not supported: a UNet with cross-attention width {context} "
                                    "(SD1 has 768, SD2 1024); put the model's .yaml beside it")
    by_channels = {4: "v1-inference.yaml", 9: "v1-inpainting-inference.yaml", 8: "instruct-pix2pix.yaml"}
    if in_channels not in by_channels:
        raise CheckpointError(path, f"not supported: an SD1 UNet with {in_channels} input channels "
                                    "(4 = normal, 9 = inpainting, 8 = instruct-pix2pix)")
    return by_channels[in_channels]


def check_tensor(path: Path, state: StateDict, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(path, f"missing tensor {key}")
    t = state[key]
    if shape is not None and tuple(t.shape) != shape:
        raise CheckpointError(path, f"tensor {key} has shape {tuple(t.shape)}, expected {shape}")
    return t
