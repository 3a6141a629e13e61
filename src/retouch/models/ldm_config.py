"""The original model description (the ``.yaml`` A1111 reads beside a checkpoint).

Two dialects: ldm's ``LatentDiffusion`` (SD1, SD2: ``unet_config`` + ``cond_stage_config``) and sgm's
``DiffusionEngine`` (SDXL: ``network_config`` + ``conditioner_config`` with several embedders).
:class:`LdmConfig` holds the few facts retouch needs from either, turns the networks into diffusers
configurations (with diffusers' own ``single_file_utils`` helpers) and describes each text encoder as a
:class:`TextEncoderSpec`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from diffusers.loaders.single_file_utils import (
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)

from retouch.models.checkpoint import CheckpointError, StateDict
from retouch.models.paths import bundled_path

# The CLIP text encoder whose configuration ships with retouch, by the name an LDM yaml uses for it.
BUNDLED_CLIP = {"openai/clip-vit-large-patch14": "clip-vit-large-patch14"}
# OpenCLIP architectures whose text-tower description ships with retouch (open_clip's model-config format).
BUNDLED_OPEN_CLIP = ("ViT-H-14", "ViT-bigG-14")


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder as the yaml describes it.

    ``kind``: "clip" (OpenAI CLIP: pads with the end token) or "open_clip" (pads with 0 after it).
    ``output``: "final" — the last layer the network keeps, through the final layer norm (SD1: Clip skip
    applies; SD2: ldm runs OpenCLIP up to the penultimate block, so the last block is not built at all);
    "hidden" — ``hidden_states[layer_idx]`` without the norm (SDXL's two encoders).
    ``pooled``: also the projected end-token output (SDXL's OpenCLIP, for the vector conditioning).
    """

    kind: str
    config: dict[str, Any]  # transformers CLIPTextConfig arguments
    tokenizer_dir: Path | None
    prefix: str  # of its tensors in the checkpoint
    output: str = "final"
    layer_idx: int = -1
    pooled: bool = False
    embedding_key: str | None = None  # its part of an SDXL embedding: "clip_l" / "clip_g"


@dataclass(frozen=True)
class LdmConfig:
    raw: dict[str, Any]
    source: str  # the yaml's path, or "bundled <name>"
    text_encoders: tuple[TextEncoderSpec, ...] = ()

    @classmethod
    def from_yaml(cls, path: Path, *, bundled: bool = False) -> LdmConfig:
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise CheckpointError(path, f"could not read the model config: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("model", {}).get("params"), dict):
            raise CheckpointError(path, "not an LDM model config: no model.params section")
        params = raw["model"]["params"]
        sections = (("network_config", "first_stage_config", "conditioner_config") if _is_sgm(raw)
                    else ("unet_config", "first_stage_config", "cond_stage_config"))
        for section in sections:
            if not isinstance(params.get(section), dict):
                raise CheckpointError(path, f"not a supported model config: no model.params.{section}")
        if _is_sgm(raw):
            encoders = _sgm_text_encoders(path, params["conditioner_config"])
        else:
            encoders = (_ldm_text_encoder(path, params["cond_stage_config"]),)
        source = f"bundled {path.name}" if bundled else str(path)
        return cls(raw=raw, source=source, text_encoders=encoders)

    @classmethod
    def bundled(cls, name: str) -> LdmConfig:
        return cls.from_yaml(bundled_path("ldm", name), bundled=True)

    @property
    def is_sdxl(self) -> bool:
        return _is_sgm(self.raw)

    @property
    def params(self) -> dict[str, Any]:
        return self.raw["model"]["params"]

    @property
    def unet_params(self) -> dict[str, Any]:
        return self.params["network_config" if self.is_sdxl else "unet_config"]["params"]

    @property
    def in_channels(self) -> int:
        return int(self.unet_params["in_channels"])

    @property
    def parameterization(self) -> str:
        if self.is_sdxl:
            scaling = str(self.params.get("denoiser_config", {}).get("params", {}).get("scaling_config", {})
                          .get("target", ""))
            return "v" if scaling.endswith("VScaling") else "eps"
        return str(self.params.get("parameterization", "eps"))

    @property
    def scale_factor(self) -> float:
        return float(self.params.get("scale_factor", 1.0))

    @property
    def is_inpainting(self) -> bool:
        return self.in_channels == 9

    @property
    def is_pix2pix(self) -> bool:
        return self.params.get("cond_stage_key") == "edit" or self.in_channels == 8

    @property
    def family(self) -> str:
        if self.is_sdxl:
            return "SDXL"
        return "SD2" if self.text_encoders and self.text_encoders[0].kind == "open_clip" else "SD1"

    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ of the training noise schedule, computed as ldm does (float64, stored as float32). SDXL: sgm's
        ``LegacyDDPMDiscretization`` (linear 0.00085…0.012, 1000 steps), which A1111 uses for it."""
        if self.is_sdxl:
            return linear_alphas_cumprod(0.00085, 0.012, 1000)
        schedule = self.params.get("beta_schedule", "linear")
        if schedule != "linear":
            raise CheckpointError(Path(self.source), f"not supported: beta_schedule {schedule!r}")
        n = int(self.params.get("timesteps", 1000))
        start, end = float(self.params.get("linear_start", 1e-4)), float(self.params.get("linear_end", 2e-2))
        return linear_alphas_cumprod(start, end, n)

    def unet_config(self, state: StateDict) -> dict[str, Any]:
        config = create_unet_diffusers_config_from_ldm(self.raw, state)
        if self.params.get("conditioning_key") in ("hybrid", "concat") and self.in_channels == 4:
            raise CheckpointError(Path(self.source), "config says hybrid conditioning but the UNet takes 4 channels")
        if self.is_sdxl:
            # sgm adds label_emb(y) to the time embedding, y being the whole vector conditioning; diffusers'
            # "projection" class embedding is that very MLP, so the UNet takes A1111's vector as it is.
            config.update(class_embed_type="projection", addition_embed_type=None, addition_time_embed_dim=None,
                          projection_class_embeddings_input_dim=int(self.unet_params["adm_in_channels"]))
        return config

    def vae_config(self, state: StateDict) -> dict[str, Any]:
        return create_vae_diffusers_config_from_ldm(self.raw, state, scaling_factor=self.scale_factor)


def _is_sgm(raw: dict[str, Any]) -> bool:
    return "network_config" in raw["model"]["params"] or str(raw["model"].get("target", "")).endswith("DiffusionEngine")


def linear_alphas_cumprod(beta_start: float, beta_end: float, n: int) -> torch.Tensor:
    """ᾱ for LDM's "linear" schedule (diffusers: "scaled_linear"): float64 math, float32 result."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.from_numpy(np.cumprod(1.0 - betas.numpy(), axis=0)).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# Text encoders
def _ldm_text_encoder(yaml_path: Path, cond_stage: dict[str, Any]) -> TextEncoderSpec:
    target = str(cond_stage.get("target", ""))
    params = cond_stage.get("params") or {}
    if target.endswith("FrozenOpenCLIPEmbedder"):
        if params.get("layer", "penultimate") != "penultimate":
            raise CheckpointError(yaml_path, f"not supported: OpenCLIP layer {params.get('layer')!r}")
        # ldm's penultimate layer: the blocks before the last, then ln_final; the last block is not built
        config = open_clip_text_config(yaml_path, str(params.get("arch", "ViT-H-14")), drop_last_layers=1)
        return TextEncoderSpec("open_clip", config, None, "cond_stage_model.model.")
    if target.endswith("FrozenCLIPEmbedder"):
        folder = _clip_folder(yaml_path, str(params.get("version", "openai/clip-vit-large-patch14")))
        return TextEncoderSpec("clip", _read_json(yaml_path, folder / "config.json"), folder,
                               "cond_stage_model.transformer.")
    raise CheckpointError(yaml_path, f"not supported: text encoder {target or '(none)'}")


_SIZE_KEYS = {"original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple"}


def _sgm_text_encoders(yaml_path: Path, conditioner: dict[str, Any]) -> tuple[TextEncoderSpec, ...]:
    models = (conditioner.get("params") or {}).get("emb_models") or []
    encoders, keys = [], []
    for i, embedder in enumerate(models):
        target, params = str(embedder.get("target", "")), embedder.get("params") or {}
        keys.append(embedder.get("input_key"))
        prefix = f"conditioner.embedders.{i}."
        if target.endswith("FrozenCLIPEmbedder"):
            folder = _clip_folder(yaml_path, str(params.get("version", "openai/clip-vit-large-patch14")))
            layer = params.get("layer", "last")
            layer_idx = int(params.get("layer_idx", -1)) if layer == "hidden" else -1
            encoders.append(TextEncoderSpec("clip", _read_json(yaml_path, folder / "config.json"), folder,
                                            prefix + "transformer.", "hidden", layer_idx, embedding_key="clip_l"))
        elif target.endswith("FrozenOpenCLIPEmbedder2"):
            if params.get("layer", "last") != "penultimate" or params.get("legacy", True):
                raise CheckpointError(yaml_path, "not supported: an OpenCLIP embedder other than SDXL's "
                                                 "(layer: penultimate, legacy: false)")
            config = open_clip_text_config(yaml_path, str(params.get("arch", "ViT-bigG-14")))
            encoders.append(TextEncoderSpec("open_clip", config, None, prefix + "model.", "hidden", -2,
                                            pooled=bool(params.get("always_return_pooled")), embedding_key="clip_g"))
        elif not target.endswith("ConcatTimestepEmbedderND"):
            raise CheckpointError(yaml_path, f"not supported: conditioner embedder {target or '(none)'}")
    if "aesthetic_score" in keys:
        raise CheckpointError(yaml_path, "not supported: an SDXL refiner (aesthetic-score conditioning); "
                                         "retouch runs SDXL base and inpainting models")
    names = [e.kind for e in encoders]
    if names != ["clip", "open_clip"] or not encoders[1].pooled or set(keys) - {"txt"} != _SIZE_KEYS:
        raise CheckpointError(yaml_path, "not supported: an SDXL conditioner other than CLIP-L + OpenCLIP "
                                         "(pooled) + size/crop/target embeddings")
    return tuple(encoders)


def _clip_folder(yaml_path: Path, version: str) -> Path:
    local = (yaml_path.parent / version).resolve()
    if (local / "config.json").is_file():
        return local
    if version in BUNDLED_CLIP:
        return bundled_path("text_encoders", BUNDLED_CLIP[version])
    raise CheckpointError(
        yaml_path,
        f"the config names the text encoder {version!r}, which is neither a folder with a config.json "
        "(relative to the yaml) nor one retouch ships; nothing is downloaded.",
    )


def open_clip_text_config(yaml_path: Path, arch: str, drop_last_layers: int = 0) -> dict[str, Any]:
    """transformers ``CLIPTextConfig`` arguments for an open_clip architecture: ``<arch>.json`` beside the
    yaml (open_clip's model-config format), else the one retouch ships (ViT-H-14, ViT-bigG-14)."""
    local = yaml_path.parent / f"{arch}.json"
    if local.is_file():
        described = _read_json(yaml_path, local)
    elif arch in BUNDLED_OPEN_CLIP:
        described = _read_json(yaml_path, bundled_path("open_clip", f"{arch}.json"))
    else:
        raise CheckpointError(yaml_path, f"not supported: OpenCLIP architecture {arch!r} (neither {local.name} "
                                         f"beside the config nor one of {', '.join(BUNDLED_OPEN_CLIP)})")
    text = described.get("text_cfg") or {}
    try:
        width, layers = int(text["width"]), int(text["layers"])
        return {
            "vocab_size": int(text.get("vocab_size", 49408)), "hidden_size": width,
            "intermediate_size": int(width * float(text.get("mlp_ratio", 4.0))),
            "projection_dim": int(described.get("embed_dim", width)), "num_hidden_layers": layers - drop_last_layers,
            "num_attention_heads": int(text.get("heads", width // 64)),
            "max_position_embeddings": int(text.get("context_length", 77)),
            "hidden_act": "quick_gelu" if described.get("quick_gelu") else "gelu", "layer_norm_eps": 1e-5,
        }
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(yaml_path, f"OpenCLIP architecture {arch!r}: text_cfg lacks or mangles {e}") from None


def _read_json(yaml_path: Path, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(yaml_path, f"could not read {path}: {e}") from None
    if not isinstance(value, dict):
        raise CheckpointError(yaml_path, f"{path}: not a JSON object")
    return value
