"""The original LDM model description (the ``.yaml`` A1111 reads beside a checkpoint).

:class:`LdmConfig` holds the few facts retouch needs from it and turns the network parts into
diffusers configurations (with diffusers' own ``single_file_utils`` helpers).
"""

from __future__ import annotations

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

# Text encoders whose configuration ships with retouch, by the name an LDM yaml uses for them.
BUNDLED_TEXT_ENCODERS = {
    "openai/clip-vit-large-patch14": "clip-vit-large-patch14",
    "ViT-H-14": "open-clip-vit-h-14",
}


@dataclass(frozen=True)
class LdmConfig:
    raw: dict[str, Any]
    source: str  # the yaml's path, or "bundled <name>"
    text_encoder_kind: str  # "clip" (SD1, HF CLIPTextModel) or "open_clip" (SD2)
    text_encoder_dir: Path  # holds config.json, maybe the tokenizer files too

    @classmethod
    def from_yaml(cls, path: Path, *, bundled: bool = False) -> LdmConfig:
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise CheckpointError(path, f"could not read the model config: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("model", {}).get("params"), dict):
            raise CheckpointError(path, "not an LDM model config: no model.params section")
        params = raw["model"]["params"]
        for section in ("unet_config", "first_stage_config", "cond_stage_config"):
            if not isinstance(params.get(section), dict):
                raise CheckpointError(path, f"not a supported LDM model config: no model.params.{section}")
        kind, te_dir = _text_encoder_location(path, params["cond_stage_config"])
        source = f"bundled {path.name}" if bundled else str(path)
        return cls(raw=raw, source=source, text_encoder_kind=kind, text_encoder_dir=te_dir)

    @classmethod
    def bundled(cls, name: str) -> LdmConfig:
        return cls.from_yaml(bundled_path("ldm", name), bundled=True)

    @property
    def params(self) -> dict[str, Any]:
        return self.raw["model"]["params"]

    @property
    def unet_params(self) -> dict[str, Any]:
        return self.params["unet_config"]["params"]

    @property
    def in_channels(self) -> int:
        return int(self.unet_params["in_channels"])

    @property
    def parameterization(self) -> str:
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
        return "SD2" if self.text_encoder_kind == "open_clip" else "SD1"

    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ of the training noise schedule, computed as ldm does (float64, stored as float32)."""
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
        return config

    def vae_config(self, state: StateDict) -> dict[str, Any]:
        return create_vae_diffusers_config_from_ldm(self.raw, state, scaling_factor=self.scale_factor)


def linear_alphas_cumprod(beta_start: float, beta_end: float, n: int) -> torch.Tensor:
    """ᾱ for LDM's "linear" schedule (diffusers: "scaled_linear"): float64 math, float32 result."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.from_numpy(np.cumprod(1.0 - betas.numpy(), axis=0)).to(torch.float32)


def _text_encoder_location(yaml_path: Path, cond_stage: dict[str, Any]) -> tuple[str, Path]:
    target = str(cond_stage.get("target", ""))
    params = cond_stage.get("params") or {}
    if target.endswith("FrozenOpenCLIPEmbedder"):
        arch = params.get("arch", "ViT-H-14")
        if arch not in BUNDLED_TEXT_ENCODERS:
            raise CheckpointError(yaml_path, f"not supported: OpenCLIP text encoder {arch!r}")
        if params.get("layer", "penultimate") != "penultimate":
            raise CheckpointError(yaml_path, f"not supported: OpenCLIP layer {params.get('layer')!r}")
        return "open_clip", bundled_path("text_encoders", BUNDLED_TEXT_ENCODERS[arch])
    if target.endswith("FrozenCLIPEmbedder"):
        version = str(params.get("version", "openai/clip-vit-large-patch14"))
        local = (yaml_path.parent / version).resolve()
        if (local / "config.json").is_file():
            return "clip", local
        if version in BUNDLED_TEXT_ENCODERS:
            return "clip", bundled_path("text_encoders", BUNDLED_TEXT_ENCODERS[version])
        raise CheckpointError(
            yaml_path,
            f"cond_stage_config names the text encoder {version!r}, which is neither a folder with a "
            "config.json (relative to the yaml) nor one retouch ships; nothing is downloaded.",
        )
    raise CheckpointError(yaml_path, f"not supported: text encoder {target or '(none)'}")
