"""Network keys → A1111 layer names, and our modules' A1111 names."""

from __future__ import annotations

import json

import pytest
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors import safe_open

from retouch.networks.keys import diffusers_to_compvis, resolve_layer, split_key
from retouch.networks.layers import ldm_unet_name
from tests.conftest import ORACLE, need_shared


@pytest.mark.parametrize("key, expected", [
    ("lora_unet_conv_in", "diffusion_model_input_blocks_0_0"),
    ("lora_unet_conv_out", "diffusion_model_out_2"),
    ("lora_unet_time_embedding_linear_1", "diffusion_model_time_embed_0"),
    ("lora_unet_time_embedding_linear_2", "diffusion_model_time_embed_2"),
    ("lora_unet_down_blocks_1_attentions_1_proj_in", "diffusion_model_input_blocks_5_1_proj_in"),
    ("lora_unet_down_blocks_2_resnets_0_conv1", "diffusion_model_input_blocks_7_0_in_layers_2"),
    ("lora_unet_down_blocks_0_resnets_1_time_emb_proj", "diffusion_model_input_blocks_2_0_emb_layers_1"),
    ("lora_unet_down_blocks_1_resnets_0_conv_shortcut", "diffusion_model_input_blocks_4_0_skip_connection"),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
     "diffusion_model_middle_block_1_transformer_blocks_0_attn2_to_k"),
    ("lora_unet_mid_block_resnets_1_conv2", "diffusion_model_middle_block_2_out_layers_3"),
    ("lora_unet_up_blocks_3_attentions_2_proj_out", "diffusion_model_output_blocks_11_1_proj_out"),
    ("lora_unet_down_blocks_0_downsamplers_0_conv", "diffusion_model_input_blocks_3_0_op"),
    ("lora_unet_up_blocks_0_upsamplers_0_conv", "diffusion_model_output_blocks_2_1_conv"),
    ("lora_unet_up_blocks_1_upsamplers_0_conv", "diffusion_model_output_blocks_5_2_conv"),
    ("lora_te_text_model_encoder_layers_3_self_attn_q_proj", "transformer_text_model_encoder_layers_3_self_attn_q_proj"),
    ("lora_unet_input_blocks_4_1_proj_in", "lora_unet_input_blocks_4_1_proj_in"),  # LDM names pass through
])
def test_a1111_name_conversion_sd1(key, expected):
    assert diffusers_to_compvis(key, is_sd2=False) == expected


def test_sd2_and_sdxl_text_encoder_names_are_open_clip_names():
    assert diffusers_to_compvis("lora_te_text_model_encoder_layers_2_mlp_fc1", True) == \
        "model_transformer_resblocks_2_mlp_c_fc"
    assert diffusers_to_compvis("lora_te_text_model_encoder_layers_2_mlp_fc2", True) == \
        "model_transformer_resblocks_2_mlp_c_proj"
    assert diffusers_to_compvis("lora_te_text_model_encoder_layers_2_self_attn_k_proj", True) == \
        "model_transformer_resblocks_2_attn_k_proj"
    assert diffusers_to_compvis("lora_te2_text_model_encoder_layers_5_self_attn_out_proj", False) == \
        "1_model_transformer_resblocks_5_attn_out_proj"


def test_resolution_fallbacks():
    layers = {"diffusion_model_input_blocks_4_1_proj_in": "A", "model_transformer_resblocks_0_attn": "MHA",
              "0_transformer_text_model_encoder_layers_0_mlp_fc1": "TE1", "transformer_text_model_final_layer_norm": "N"}
    assert resolve_layer("lora_unet_input_blocks_4_1_proj_in", layers, False) == \
        ("diffusion_model_input_blocks_4_1_proj_in", "A")
    # a fused attention projection keeps its own name, finds the fused layer
    assert resolve_layer("lora_te_text_model_encoder_layers_0_self_attn_q_proj", layers, True) == \
        ("model_transformer_resblocks_0_attn_q_proj", "MHA")
    assert resolve_layer("lora_te1_text_model_encoder_layers_0_mlp_fc1", layers, False) == \
        ("0_transformer_text_model_encoder_layers_0_mlp_fc1", "TE1")
    assert resolve_layer("lora_te1_text_model_final_layer_norm", layers, False) == \
        ("transformer_text_model_final_layer_norm", "N")
    assert resolve_layer("lora_unet_input_blocks_9_1_proj_in", layers, False) is None


@pytest.mark.parametrize("key, expected", [
    ("lora_unet_conv_in.lora_down.weight", ("lora_unet_conv_in", "lora_down.weight")),
    ("lora_unet_conv_in.alpha", ("lora_unet_conv_in", "alpha")),
    ("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_B.weight",
     ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0", "lora_up.weight")),
    ("text_encoder.text_model.encoder.layers.1.mlp.fc2.lora_A.weight",
     ("lora_te_text_model_encoder_layers_1_mlp_fc2", "lora_down.weight")),
    ("bundle_emb.myemb.string_to_param.*", ("bundle_emb", "myemb.string_to_param.*")),
])
def test_split_key(key, expected):
    assert split_key(key) == expected


def _check_inverse_of_diffusers_conversion(checkpoint_path, unet_config):
    """Our diffusers → LDM names are exactly the inverse of diffusers' own LDM → diffusers key conversion."""
    with safe_open(str(checkpoint_path), "pt") as f:
        keys = [k for k in f.keys() if k.startswith("model.diffusion_model.")]  # noqa: SIM118 - not a dict
    converted = convert_ldm_unet_checkpoint({k: k for k in keys}, unet_config)  # values: the LDM key itself
    up_attention = [t.startswith("CrossAttn") for t in unet_config["up_block_types"]]
    assert len(converted) == len(keys)
    for diffusers_key, ldm_key in converted.items():
        module = diffusers_key.rpartition(".")[0]
        expected = ldm_key[len("model.diffusion_model."):].rpartition(".")[0]
        assert ldm_unet_name(module, unet_config["layers_per_block"], up_attention) == expected, diffusers_key


def test_unet_names_invert_diffusers_conversion_on_the_bundled_tiny(bundled_tiny):
    _check_inverse_of_diffusers_conversion(bundled_tiny.path, dict(bundled_tiny.unet.config))


def test_layer_names_match_what_a1111_applied(tiny_sd1):
    """A1111 recorded which of its layers each key of the reference LoRA went to."""
    need_shared()
    recorded = json.loads((ORACLE / "intermediates" / "099_networks.json").read_text())[0]["key_map"]
    layers = tiny_sd1.extra_networks.layers
    for key, a1111_layer in recorded.items():
        resolved = resolve_layer(key, layers, False)
        assert resolved is not None and resolved[0] == a1111_layer, key
    _check_inverse_of_diffusers_conversion(tiny_sd1.path, dict(tiny_sd1.unet.config))
