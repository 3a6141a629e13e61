"""Writing networks back in the original LDM (CompVis) single-file layout.

The inverse of diffusers' ``convert_ldm_*_checkpoint``: used to write the bundled tiny model and
the random SD1.5-sized checkpoints of tests and benchmarks, so that they load through exactly the
path real checkpoints take. Round trips are checked bit-exact in the tests.
"""

from __future__ import annotations

import re

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

StateDict = dict[str, torch.Tensor]

_RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(unet: UNet2DConditionModel) -> StateDict:
    """UNet weights keyed as ``model.diffusion_model.*`` of an SD1/SD2/SDXL checkpoint."""
    layers = unet.config.layers_per_block
    n_levels = len(unet.config.block_out_channels)
    out: StateDict = {}
    for key, tensor in unet.state_dict().items():
        out["model.diffusion_model." + _unet_key(key, layers, n_levels, unet)] = tensor
    return out


def _unet_key(key: str, layers: int, n_levels: int, unet: UNet2DConditionModel) -> str:
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for old, new in fixed.items():
        if key.startswith(old + "."):
            return new + key[len(old):]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = (layers + 1) * level + j + 1
        return f"input_blocks.{block}.{0 if kind == 'resnets' else 1}.{_resnet(rest) if kind == 'resnets' else rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(layers + 1) * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = (layers + 1) * level + j
        return f"output_blocks.{block}.{0 if kind == 'resnets' else 1}.{_resnet(rest) if kind == 'resnets' else rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        level = int(m[1])
        has_attention = hasattr(unet.up_blocks[level], "attentions")
        return f"output_blocks.{(layers + 1) * level + layers}.{2 if has_attention else 1}.conv.{m[2]}"
    raise ValueError(f"no LDM name for UNet weight {key}")


def _resnet(rest: str) -> str:
    for old, new in _RESNET_UNET.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def vae_to_ldm(vae: AutoencoderKL, prefix: str = "first_stage_model.") -> StateDict:
    """VAE weights in the LDM layout (attention projections as 1×1 convolutions)."""
    n_levels = len(vae.config.block_out_channels)
    out: StateDict = {}
    for key, tensor in vae.state_dict().items():
        new = _vae_key(key, n_levels)
        if ".mid.attn_1." in new and new.rsplit(".", 2)[-2] in ("q", "k", "v", "proj_out") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[prefix + new] = tensor
    return out


def _vae_key(key: str, n_levels: int) -> str:
    key = key.replace("conv_norm_out", "norm_out")
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_vae_resnet(m[3])}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        rest = m[2]
        for old, new in _VAE_ATTENTION.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
        return f"{m[1]}.mid.attn_1.{rest}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"decoder.up.{n_levels - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.{m[2]}"
    return key


def _vae_resnet(rest: str) -> str:
    return "nin_shortcut" + rest[len("conv_shortcut"):] if rest.startswith("conv_shortcut.") else rest


def clip_to_ldm(transformer: CLIPTextModel) -> StateDict:
    """SD1 text encoder weights keyed ``cond_stage_model.transformer.text_model.*``."""
    out = {"cond_stage_model.transformer.text_model." + k: v for k, v in transformer.state_dict().items()}
    positions = transformer.config.max_position_embeddings
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    return out


def schedule_buffers(alphas_cumprod: torch.Tensor) -> StateDict:
    """The noise-schedule buffers an LDM checkpoint carries (only ᾱ is read back)."""
    ac = alphas_cumprod.to(torch.float64)
    prev = torch.cat([ac.new_ones(1), ac[:-1]])
    return {
        "alphas_cumprod": ac.float(),
        "alphas_cumprod_prev": prev.float(),
        "betas": (1 - ac / prev).float(),
        "sqrt_alphas_cumprod": ac.sqrt().float(),
        "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt().float(),
    }


_OPEN_CLIP_BLOCK = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}


def open_clip_to_ldm(transformer: CLIPTextModel, projection: torch.Tensor, prefix: str) -> StateDict:
    """An OpenCLIP text tower in open_clip's own layout (fused ``attn.in_proj_*``), keyed under ``prefix``
    (SDXL: ``conditioner.embedders.1.model.``); ``projection`` is the ``(out, width)`` text projection."""
    weights = {k.removeprefix("text_model."): v for k, v in transformer.state_dict().items()}
    out: StateDict = {
        prefix + "token_embedding.weight": weights.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": weights.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": weights.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": weights.pop("final_layer_norm.bias"),
        prefix + "text_projection": projection.T.contiguous(),
    }
    for i in range(transformer.config.num_hidden_layers):
        ours, theirs = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[theirs + f"attn.in_proj_{kind}"] = torch.cat(
                [weights.pop(ours + f"self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")])
            for name, ldm in _OPEN_CLIP_BLOCK.items():
                out[theirs + f"{ldm}.{kind}"] = weights.pop(ours + f"{name}.{kind}")
    if weights:
        raise ValueError(f"no open_clip name for {sorted(weights)[:3]}")
    return out
