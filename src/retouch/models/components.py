"""Build the networks (diffusers UNet/VAE, transformers CLIP) from an LDM-layout state dict.

Key renaming is diffusers' ``single_file_utils``; the networks are created on the meta device
(no memory, no random weights) and take the file's tensors directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel
from transformers.initialization import no_init_weights

from retouch.models.checkpoint import CheckpointError, SafetensorsFile, StateDict, TensorLocation
from retouch.models.ldm_config import LdmConfig, TextEncoderSpec
from retouch.models.text_encoder import TextEncoder, load_tokenizer
from retouch.models.token_table import FileTokenEmbedding

logger = logging.getLogger(__name__)

CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."


def materialize(module: torch.nn.Module, weights: StateDict, dtype: torch.dtype, path: Path,
                what: str) -> torch.nn.Module:
    """Load ``weights`` (strict) into an empty ``module``, cast to ``dtype``, one tensor at a time."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(path, f"the {what} weights do not fit the {what} described by the config: "
                                    + ", ".join(detail))
    cast = {}
    for key in list(weights):  # one tensor at a time: each source copy is freed as soon as it is cast
        tensor = weights[key]
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(path, f"the {what} tensor {key} has shape {tuple(tensor.shape)}, "
                                        f"the config expects {tuple(expected[key].shape)}")
        # always a copy: a tensor read from a memory-mapped file would otherwise keep the whole mapping
        # (and every page read through it) resident for the model's lifetime
        cast[key] = tensor.to(dtype if tensor.is_floating_point() else tensor.dtype, copy=True)
        if isinstance(weights, dict):
            del weights[key]
        del tensor
    module.load_state_dict(cast, strict=True, assign=True)
    return module.eval().requires_grad_(False)


# Networks are built on the meta device: nothing is allocated until the file's tensors are assigned, so a
# config that describes a huge network (a yaml asking for 144 GB) fails on its shapes, not by exhausting memory.
_META = torch.device("meta")


def build_unet(config: LdmConfig, state: StateDict, dtype: torch.dtype, path: Path) -> UNet2DConditionModel:
    unet_config = config.unet_config(state)
    weights = convert_ldm_unet_checkpoint(state, unet_config)
    with _META:
        unet = UNet2DConditionModel(**unet_config)
    return materialize(unet, weights, dtype, path, "UNet")


def build_vae(config: LdmConfig, state: StateDict, dtype: torch.dtype, path: Path) -> AutoencoderKL:
    vae_config = config.vae_config(state)
    return build_vae_from_config(vae_config, convert_ldm_vae_checkpoint(state, vae_config), dtype, path)


def build_vae_from_config(vae_config: dict, weights: StateDict, dtype: torch.dtype, path: Path) -> AutoencoderKL:
    with _META:
        vae = AutoencoderKL(**vae_config)
    return materialize(vae, weights, dtype, path, "VAE")


def build_text_encoders(config: LdmConfig, state: StateDict, dtype: torch.dtype, path: Path) -> list[TextEncoder]:
    """The text encoders the config describes (SD1/SD2: one; SDXL: CLIP-L and OpenCLIP), in its order."""
    return [build_text_encoder(spec, state, dtype, path) for spec in config.text_encoders]


def build_text_encoder(spec: TextEncoderSpec, state: StateDict, dtype: torch.dtype, path: Path) -> TextEncoder:
    te_config = CLIPTextConfig(**spec.config)
    with _META, no_init_weights():  # the weights come from the file: skip random init
        transformer = CLIPTextModel(te_config)
    if spec.kind == "open_clip":
        weights, projection = _open_clip_weights(state, spec.prefix, te_config.num_hidden_layers, path)
    else:
        weights, projection = _clip_keys_for_transformers(
            {k[len(spec.prefix):]: state[k] for k in state if k.startswith(spec.prefix)}), None
    if not weights:
        raise CheckpointError(path, f"no text encoder weights ({spec.prefix}*) found")
    table = _token_table_location(spec, state, weights)
    if table is not None:  # it stays in the file: the lookup reads the rows it needs
        weights = {**weights, TOKEN_TABLE: torch.empty(table.shape, dtype=table.dtype, device=_META)}
    materialize(transformer, weights, dtype, path, "text encoder")
    if table is not None:
        transformer.embeddings.token_embedding = FileTokenEmbedding(table, dtype)
    embeddings = transformer.embeddings  # its position ids are a non-persistent buffer: not in the file
    embeddings.register_buffer("position_ids", torch.arange(te_config.max_position_embeddings)[None],
                               persistent=False)
    if spec.pooled:
        if projection is None:
            raise CheckpointError(path, f"missing tensor {spec.prefix}text_projection")
        # stored (width, out) for ``x @ projection``; kept as (out, width), a linear layer's weight
        projection = projection.T.to(dtype, memory_format=torch.contiguous_format, copy=True)
    return TextEncoder(transformer, load_tokenizer(spec.tokenizer_dir), spec.kind, spec.embedding_key,
                       output=spec.output, layer_idx=spec.layer_idx, projection=projection if spec.pooled else None)


TOKEN_TABLE = "embeddings.token_embedding.weight"


def _token_table_location(spec: TextEncoderSpec, state: StateDict, weights: StateDict) -> TensorLocation | None:
    """Where the token-embedding table lies in a safetensors file (None: it is loaded as every other weight —
    a pickle, an unusual dtype, a table of another shape, which materialize reports, or no ``os.pread``)."""
    if not isinstance(state, SafetensorsFile) or TOKEN_TABLE not in weights or not hasattr(os, "pread"):
        return None
    stored = spec.prefix + ("token_embedding.weight" if spec.kind == "open_clip"
                            else "text_model.embeddings.token_embedding.weight")
    location = state.location(stored) if stored in state else None
    if location is None or tuple(weights[TOKEN_TABLE].shape) != location.shape or len(location.shape) != 2:
        return None
    return location


# OpenCLIP's text tower as SD2 and SDXL store it → transformers' CLIPTextModel names (the renaming of diffusers'
# ``convert_open_clip_checkpoint``, which also copies every q/k/v weight once more before it is cast)
_OPEN_CLIP_NAMES = {"token_embedding.weight": "embeddings.token_embedding.weight",
                    "positional_embedding": "embeddings.position_embedding.weight",
                    "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"}
_OPEN_CLIP_BLOCK_NAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                          "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def _open_clip_weights(state: StateDict, prefix: str, layers: int,
                       path: Path) -> tuple[StateDict, torch.Tensor | None]:
    """The CLIPTextModel weights of an OpenCLIP text tower, as views of the file's tensors (the fused q/k/v
    projection split without a copy: each is copied once, when it is cast), and the stored text projection.
    Blocks from ``layers`` on are left out, never read (SD2 does not use its last). Names this does not know are
    kept, for :func:`materialize` to report."""
    weights = {new: state[prefix + old] for old, new in _OPEN_CLIP_NAMES.items() if prefix + old in state}
    blocks = prefix + "transformer.resblocks."
    for key in state:
        if not key.startswith(blocks):
            continue
        index, _, name = key[len(blocks):].partition(".")
        if not index.isdigit():
            weights[key[len(prefix):]] = state[key]
        elif int(index) < layers:
            layer = f"encoder.layers.{index}."
            if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
                fused = state[key]
                if fused.ndim == 0 or fused.shape[0] % 3:
                    raise CheckpointError(path, f"the text encoder tensor {key} has shape {tuple(fused.shape)}, "
                                                "not three stacked projections (q, k, v)")
                for part, tensor in zip("qkv", fused.chunk(3), strict=True):
                    weights[f"{layer}self_attn.{part}_proj.{name.rsplit('_', 1)[1]}"] = tensor
            else:
                module, _, param = name.rpartition(".")
                weights[f"{layer}{_OPEN_CLIP_BLOCK_NAMES.get(module, module)}.{param}"] = state[key]
    return weights, state.get(prefix + "text_projection")


def _clip_keys_for_transformers(weights: StateDict) -> StateDict:
    """transformers 5 names CLIPTextModel weights without the ``text_model.`` prefix."""
    out = {}
    for key, tensor in weights.items():
        key = key.removeprefix("text_model.")
        if key.endswith("position_ids"):
            continue  # a non-persistent buffer, rebuilt by the model
        out[key] = tensor
    return out
