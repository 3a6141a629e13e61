"""A model's patchable layers under the names A1111 gives them (``assign_network_names_to_compvis_modules``).

A1111 names a layer by its module path in the original (LDM) networks with dots made underscores:
``diffusion_model_input_blocks_1_1_proj_in``, ``transformer_text_model_encoder_layers_0_mlp_fc1`` (SD1's
CLIP), ``model_transformer_resblocks_0_attn`` (SD2's OpenCLIP, whose q/k/v are one fused projection). Our
networks are diffusers' UNet and transformers' CLIP, so the names are rebuilt here from their module
paths; :func:`ldm_unet_name` is the inverse of diffusers' LDM → diffusers UNet key conversion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_FIXED = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
          "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
          "add_embedding.linear_2": "label_emb.0.2", "class_embedding.linear_1": "label_emb.0.0",
          "class_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
_BLOCK = re.compile(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.?(.*)")
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.?(.*)")


@dataclass(frozen=True)
class Layer:
    """One patchable weight layer. ``fused`` layers (OpenCLIP attention) are four Linears: q, k, v, out;
    ``inert`` ones are named by A1111 but never patched on their own (an OpenCLIP ``out_proj``)."""

    name: str
    modules: tuple[torch.nn.Module, ...]
    fused: bool = False
    inert: bool = False

    @property
    def module(self) -> torch.nn.Module:
        return self.modules[0]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def ldm_unet_name(name: str, layers_per_block: int, up_has_attention: Sequence[bool]) -> str | None:
    """The LDM module path of a diffusers UNet module path (``down_blocks.1.resnets.0.conv1`` →
    ``input_blocks.4.0.in_layers.2`` with two ResBlocks per level), or None for a path LDM lacks."""
    for prefix, ldm in _FIXED.items():
        if name == prefix or name.startswith(prefix + "."):
            return ldm + name[len(prefix):]
    per_level = layers_per_block + 1
    m = _MID.fullmatch(name)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return _join(f"middle_block.{1 + 2 * j}", rest)
        return _join(f"middle_block.{2 * j}", _resnet(rest))
    m = _BLOCK.fullmatch(name)
    if not m:
        return None
    where, i, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    if where == "down_blocks":
        if kind == "downsamplers":
            return _join(f"input_blocks.{(i + 1) * per_level}.0.op", rest.removeprefix("conv"))
        return _join(f"input_blocks.{1 + i * per_level + j}.{1 if kind == 'attentions' else 0}",
                     rest if kind == "attentions" else _resnet(rest))
    if kind == "upsamplers":
        index = 2 if up_has_attention[i] else 1
        return _join(f"output_blocks.{i * per_level + layers_per_block}.{index}", rest)
    return _join(f"output_blocks.{i * per_level + j}.{1 if kind == 'attentions' else 0}",
                 rest if kind == "attentions" else _resnet(rest))


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return _join(_RESNET.get(head, head), tail)


def unet_layers(unet: Any) -> Iterator[Layer]:
    config = unet.config
    per_block = config.layers_per_block
    if not isinstance(per_block, int):
        per_block = int(per_block[0])
    up_attention = [t.startswith("CrossAttn") for t in config.up_block_types]
    for name, module in unet.named_modules():
        if isinstance(module, PATCHABLE):
            ldm = ldm_unet_name(name, per_block, up_attention)
            if ldm is not None:
                yield Layer("diffusion_model_" + ldm.replace(".", "_"), (module,))


def clip_layers(transformer: torch.nn.Module, prefix: str) -> Iterator[Layer]:
    """OpenAI CLIP (SD1, SDXL's first encoder): transformers' module paths under ``transformer.text_model``."""
    for name, module in transformer.named_modules():
        if isinstance(module, PATCHABLE):
            path = "text_model." + name.removeprefix("text_model.")
            yield Layer(prefix + "transformer_" + path.replace(".", "_"), (module,))


_OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def open_clip_layers(transformer: Any, prefix: str) -> Iterator[Layer]:
    """OpenCLIP (SD2, SDXL's second encoder), converted to transformers' CLIP: A1111's names are open_clip's
    (``model_transformer_resblocks_N_mlp_c_fc``), and its attention is one fused layer ``…_attn``."""
    model = getattr(transformer, "text_model", transformer)
    for i, block in enumerate(model.encoder.layers):
        base = f"{prefix}model_transformer_resblocks_{i}_"
        for ours, theirs in _OPEN_CLIP.items():
            yield Layer(base + theirs.replace(".", "_"), (block.get_submodule(ours),))
        attention = block.self_attn
        yield Layer(base + "attn", (attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj),
                    fused=True)
        yield Layer(base + "attn_out_proj", (attention.out_proj,), inert=True)
    yield Layer(prefix + "model_ln_final", (model.final_layer_norm,))


def text_layers(transformer: torch.nn.Module, kind: str, prefix: str = "") -> Iterator[Layer]:
    return open_clip_layers(transformer, prefix) if kind == "open_clip" else clip_layers(transformer, prefix)
