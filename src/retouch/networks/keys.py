"""Network file keys → the A1111 layer names they patch (A1111 ``networks.load_network``).

A key is ``<layer part>.<weight part>`` (``lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight``).
The layer part is resolved as A1111 does: diffusers-style block names are converted to the original
(LDM) names (:func:`diffusers_to_compvis`), which are then looked up among the model's layers
(:mod:`retouch.networks.layers`); failing that, ``_q_proj``/``_k_proj``/``_v_proj`` names look for a fused
attention layer, ``lora_unet_`` is read as ``diffusion_model_`` and ``lora_te1_text_model`` as the first
text encoder.

Beyond A1111: PEFT/diffusers files that spell layers with dots (``unet.down_blocks.0….lora_A.weight``,
``text_encoder.text_model.…``) are rewritten to kohya names first, so they work instead of matching
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

_RESNET_SUFFIXES = {
    "conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
    "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection",
}

_RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), kind) for p, kind in (
    (r"lora_unet_conv_in(.*)", "conv_in"),
    (r"lora_unet_conv_out(.*)", "conv_out"),
    (r"lora_unet_time_embedding_linear_(\d+)(.*)", "time"),
    (r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", "down"),
    (r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", "mid"),
    (r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", "up"),
    (r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", "downsampler"),
    (r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", "upsampler"),
    (r"lora_te_text_model_encoder_layers_(\d+)_(.+)", "te"),
    (r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", "te2"),
)]


def _suffix(kind: str, name: str) -> str:
    return _RESNET_SUFFIXES.get(name, name) if kind == "resnets" else name


def _open_clip_name(rest: str) -> str:
    if "mlp_fc1" in rest:
        return rest.replace("mlp_fc1", "mlp_c_fc")
    if "mlp_fc2" in rest:
        return rest.replace("mlp_fc2", "mlp_c_proj")
    return rest.replace("self_attn", "attn")


def diffusers_to_compvis(key: str, is_sd2: bool) -> str:
    """A1111's ``convert_diffusers_name_to_compvis``: kohya/diffusers layer names → LDM layer names.

    Its block arithmetic assumes SD's two ResBlocks per level (three layers per block), as A1111's does;
    other names are returned unchanged.

    >>> diffusers_to_compvis("lora_unet_down_blocks_1_resnets_0_conv1", False)
    'diffusion_model_input_blocks_4_0_in_layers_2'
    """
    for pattern, kind in _RULES:
        m = pattern.match(key)
        if m is None:
            continue
        g: list[Any] = [int(x) if x.isdigit() else x for x in m.groups()]
        if kind == "conv_in":
            return f"diffusion_model_input_blocks_0_0{g[0]}"
        if kind == "conv_out":
            return f"diffusion_model_out_2{g[0]}"
        if kind == "time":
            return f"diffusion_model_time_embed_{g[0] * 2 - 2}{g[1]}"
        if kind == "down":
            return (f"diffusion_model_input_blocks_{1 + g[0] * 3 + g[2]}_{1 if g[1] == 'attentions' else 0}_"
                    f"{_suffix(g[1], g[3])}")
        if kind == "mid":
            index = 1 if g[0] == "attentions" else g[1] * 2
            return f"diffusion_model_middle_block_{index}_{_suffix(g[0], g[2])}"
        if kind == "up":
            return (f"diffusion_model_output_blocks_{g[0] * 3 + g[2]}_{1 if g[1] == 'attentions' else 0}_"
                    f"{_suffix(g[1], g[3])}")
        if kind == "downsampler":
            return f"diffusion_model_input_blocks_{3 + g[0] * 3}_0_op"
        if kind == "upsampler":
            return f"diffusion_model_output_blocks_{2 + g[0] * 3}_{2 if g[0] > 0 else 1}_conv"
        if kind == "te":
            if is_sd2:
                return f"model_transformer_resblocks_{g[0]}_{_open_clip_name(g[1])}"
            return f"transformer_text_model_encoder_layers_{g[0]}_{g[1]}"
        return f"1_model_transformer_resblocks_{g[0]}_{_open_clip_name(g[1])}"
    return key


_X_PROJ = re.compile(r"(.*)_([qkv]_proj)$")
T = TypeVar("T")


def resolve_layer(layer_key: str, layers: Mapping[str, T], is_sd2: bool) -> tuple[str, T] | None:
    """The A1111 layer name a file's layer key patches and that layer, or None when it matches nothing.

    The name returned is the one A1111 files the module under: for a projection of a fused attention
    layer it keeps its ``_q_proj`` suffix (the layer found is the fused one).
    """
    key = diffusers_to_compvis(layer_key, is_sd2)
    if key in layers:
        return key, layers[key]
    m = _X_PROJ.match(key)
    if m and m.group(1) in layers:
        return key, layers[m.group(1)]
    candidates = []
    if "lora_unet" in layer_key:
        candidates.append(layer_key.replace("lora_unet", "diffusion_model"))
    elif "lora_te1_text_model" in layer_key:
        candidates += [layer_key.replace("lora_te1_text_model", "0_transformer_text_model"),
                       layer_key.replace("lora_te1_text_model", "transformer_text_model")]
    for candidate in candidates:
        if candidate in layers:
            return candidate, layers[candidate]
    return None


_PEFT_PREFIXES = (("unet.", "lora_unet_"), ("text_encoder_2.", "lora_te2_"), ("text_encoder.", "lora_te_"))
_PEFT_WEIGHTS = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
                 "lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight"}


def split_key(key: str) -> tuple[str, str]:
    """``(layer part, weight part)`` of a file key, as A1111 splits it (at the first dot); a PEFT/diffusers
    dotted key becomes the kohya spelling first.

    >>> split_key("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight")
    ('lora_te_text_model_encoder_layers_0_mlp_fc1', 'lora_up.weight')
    >>> split_key("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight")
    ('lora_unet_down_blocks_0_attentions_0_proj_in', 'lora_down.weight')
    """
    for prefix, kohya in _PEFT_PREFIXES:
        if key.startswith(prefix):
            for suffix, weight in _PEFT_WEIGHTS.items():
                if key.endswith("." + suffix):
                    layer = key[len(prefix):-len(suffix) - 1]
                    layer = layer.removeprefix("text_model.").replace(".", "_")
                    if kohya != "lora_unet_":
                        layer = "text_model_" + layer
                    return kohya + layer, weight
    layer, _, weight = key.partition(".")
    return layer, weight
