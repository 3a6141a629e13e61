"""Loading a model saved in the diffusers folder layout (``model_index.json`` + component folders)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from retouch.models.checkpoint import CheckpointError, file_sha256
from retouch.models.ldm_config import linear_alphas_cumprod
from retouch.models.model import Model
from retouch.models.paths import cache_dir
from retouch.models.text_encoder import TextEncoder, load_tokenizer


def load(folder: Path, dtype: torch.dtype, vae_dtype: torch.dtype | None = None) -> Model:
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(folder, "a folder, but not a diffusers model (no model_index.json)")
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        if not (folder / part).is_dir():
            raise CheckpointError(folder, f"diffusers folder without a {part}/ folder")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, local_files_only=True)
        vae = load_vae(folder / "vae", vae_dtype or dtype)
        transformer = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(folder, f"could not load the diffusers model: {e}") from None
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    kind = "open_clip" if transformer.config.hidden_size == 1024 else "clip"
    tokenizer = load_tokenizer(folder / "tokenizer")
    in_channels = unet.config.in_channels
    unet_weights = _first_existing(folder / "unet", "diffusion_pytorch_model.safetensors",
                                   "diffusion_pytorch_model.bin")
    sha = file_sha256(unet_weights, cache_dir()) if unet_weights else None
    return Model(
        name=folder.name, path=folder, short_hash=sha[:10] if sha else None, sha256=sha,
        family="SD2" if kind == "open_clip" else "SD1",
        parameterization="v" if scheduler.get("prediction_type") == "v_prediction" else "eps",
        alphas_cumprod=_alphas_cumprod(folder, scheduler), scale_factor=float(vae.config.scaling_factor),
        is_inpainting=in_channels == 9, is_pix2pix=in_channels == 8, unet=unet.eval().requires_grad_(False),
        vae=vae, text_encoder=TextEncoder(transformer.eval().requires_grad_(False), tokenizer, kind),
        config_source=str(index), dtype=dtype)


def load_vae(folder: Path, dtype: torch.dtype) -> AutoencoderKL:
    try:
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(folder, f"could not load the diffusers VAE: {e}") from None
    return vae.eval().requires_grad_(False)


def _alphas_cumprod(folder: Path, scheduler: dict) -> torch.Tensor:
    """ᾱ from the scheduler config (``scaled_linear`` = LDM's ``linear``), computed in float64."""
    schedule = scheduler.get("beta_schedule", "scaled_linear")
    n = int(scheduler.get("num_train_timesteps", 1000))
    start, end = float(scheduler.get("beta_start", 0.00085)), float(scheduler.get("beta_end", 0.012))
    if schedule == "scaled_linear":
        return linear_alphas_cumprod(start, end, n)
    raise CheckpointError(folder, f"not supported: scheduler beta_schedule {schedule!r}")


def _first_existing(folder: Path, *names: str) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)

