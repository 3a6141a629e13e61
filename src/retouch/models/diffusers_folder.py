"""Models in the diffusers folder layout (``model_index.json`` + component folders): :func:`load` and :func:`save`.

SDXL folders hold a UNet whose vector conditioning is split into ``text_embeds`` and ``time_ids``
(``addition_embed_type: text_time``); retouch keeps SDXL's UNet in sgm's form, taking A1111's whole vector
(``class_embed_type: projection``), so the two are converted into each other here (same weights, renamed).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from retouch.models.checkpoint import CheckpointError, file_sha256
from retouch.models.ldm_config import linear_alphas_cumprod
from retouch.models.model import Model
from retouch.models.paths import cache_dir
from retouch.models.text_encoder import TextEncoder, load_tokenizer

_META = torch.device("meta")


def load(folder: Path, dtype: torch.dtype, vae_dtype: torch.dtype | None = None) -> Model:
    index = folder / "model_index.json"
    if not index.is_file():
        raise CheckpointError(folder, "a folder, but not a diffusers model (no model_index.json)")
    for part in ("unet", "vae", "text_encoder", "scheduler"):
        if not (folder / part).is_dir():
            raise CheckpointError(folder, f"diffusers folder without a {part}/ folder")
    is_sdxl = (folder / "text_encoder_2").is_dir()
    try:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, local_files_only=True)
        vae = load_vae(folder / "vae", vae_dtype or dtype)
        transformer = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=dtype, local_files_only=True)
        second = (CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", dtype=dtype,
                                                              local_files_only=True) if is_sdxl else None)
    except (OSError, ValueError) as e:
        raise CheckpointError(folder, f"could not load the diffusers model: {e}") from None
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    unet_weights = _first_existing(folder / "unet", "diffusion_pytorch_model.safetensors",
                                   "diffusion_pytorch_model.bin")
    sha = file_sha256(unet_weights, cache_dir()) if unet_weights else None
    if is_sdxl:
        assert second is not None
        family, encoders = "SDXL", _sdxl_encoders(folder, transformer, second)
        unet = _unet_with_vector_input(folder, unet)
    else:
        kind = "open_clip" if transformer.config.hidden_size == 1024 else "clip"
        family, encoders = ("SD2" if kind == "open_clip" else "SD1"), [
            TextEncoder(transformer.eval().requires_grad_(False), load_tokenizer(folder / "tokenizer"), kind)]
    in_channels = unet.config.in_channels
    return Model(
        name=folder.name, path=folder, short_hash=sha[:10] if sha else None, sha256=sha, family=family,
        parameterization="v" if scheduler.get("prediction_type") == "v_prediction" else "eps",
        alphas_cumprod=_alphas_cumprod(folder, scheduler), scale_factor=float(vae.config.scaling_factor),
        is_inpainting=in_channels == 9, is_pix2pix=in_channels == 8, unet=unet.eval().requires_grad_(False),
        vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1] if len(encoders) > 1 else None,
        config_source=str(index), dtype=dtype)


def _sdxl_encoders(folder: Path, clip_l: CLIPTextModel, clip_g: CLIPTextModelWithProjection) -> list[TextEncoder]:
    """SDXL's encoders as sgm reads them: CLIP-L's and OpenCLIP's penultimate hidden states; OpenCLIP's pooled
    output through its projection."""
    layers_l = int(clip_l.config.num_hidden_layers)
    # A CLIPTextModelWithProjection runs the same text model: keep its text model and projection apart.
    with _META:
        model_g = CLIPTextModel(clip_g.config)
    model_g.load_state_dict({k.removeprefix("text_model."): v for k, v in clip_g.state_dict().items()
                             if not k.startswith("text_projection")}, strict=True, assign=True)
    model_g.embeddings.register_buffer("position_ids", torch.arange(clip_g.config.max_position_embeddings)[None],
                                       persistent=False)
    projection = clip_g.text_projection.weight.detach().clone()
    tokenizer_2 = folder / "tokenizer_2"
    return [
        TextEncoder(clip_l.eval().requires_grad_(False), load_tokenizer(folder / "tokenizer"), "clip", "clip_l",
                    output="hidden", layer_idx=layers_l - 1),
        TextEncoder(model_g.eval().requires_grad_(False), load_tokenizer(tokenizer_2), "open_clip", "clip_g",
                    output="hidden", layer_idx=-2, projection=projection),
    ]


def _unet_with_vector_input(folder: Path, unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """diffusers' "text_time" SDXL UNet → the same network taking sgm's whole vector (class embedding)."""
    config = dict(unet.config)
    if config.get("addition_embed_type") != "text_time":
        raise CheckpointError(folder, "an SDXL folder whose UNet has no text_time conditioning")
    config.update(class_embed_type="projection", addition_embed_type=None, addition_time_embed_dim=None)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with _META:
        converted = UNet2DConditionModel(**config)
    weights = {k.replace("add_embedding.", "class_embedding."): v for k, v in unet.state_dict().items()}
    converted.load_state_dict(weights, strict=True, assign=True)
    return converted


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


# ---------------------------------------------------------------------------------------------
def save(model: Model, folder: Path) -> None:
    """Write ``model`` as a diffusers folder that diffusers' own pipelines load (for comparisons, and for users
    who want one): ``StableDiffusion(Img2Img|XLImg2Img)Pipeline`` components with an Euler scheduler."""
    folder.mkdir(parents=True, exist_ok=True)
    model.vae.save_pretrained(folder / "vae")
    model.text_encoder.transformer.save_pretrained(folder / "text_encoder")
    model.text_encoder.tokenizer.save_pretrained(folder / "tokenizer")
    index: dict[str, Any] = {
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    if model.text_encoder_2 is not None:
        _save_sdxl_parts(model, folder)
        index.update(_class_name="StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=False,
                     force_zeros_for_empty_prompt=True,
                     text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"], image_encoder=[None, None],
                     feature_extractor=[None, None])
    else:
        model.unet.save_pretrained(folder / "unet")
        index.update(_class_name="StableDiffusionImg2ImgPipeline", safety_checker=[None, None],
                     feature_extractor=[None, None], image_encoder=[None, None], requires_safety_checker=False)
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "num_train_timesteps": 1000, "steps_offset": 1, "timestep_spacing": "leading",
        "prediction_type": "v_prediction" if model.parameterization == "v" else "epsilon"}))
    (folder / "model_index.json").write_text(json.dumps(index))


def _save_sdxl_parts(model: Model, folder: Path) -> None:
    assert model.text_encoder_2 is not None and model.text_encoder_2.projection is not None
    config = {k: v for k, v in dict(model.unet.config).items() if not k.startswith("_")}
    vector = int(config["projection_class_embeddings_input_dim"])
    config.update(class_embed_type=None, addition_embed_type="text_time", addition_time_embed_dim=256,
                  addition_embed_type_num_heads=64)
    with _META:
        unet = UNet2DConditionModel(**config)
    weights = {k.replace("class_embedding.", "add_embedding."): v for k, v in model.unet.state_dict().items()}
    unet.load_state_dict(weights, strict=True, assign=True)
    assert unet.config.projection_class_embeddings_input_dim == vector
    unet.save_pretrained(folder / "unet")
    encoder = model.text_encoder_2
    with _META:
        with_projection = CLIPTextModelWithProjection(encoder.transformer.config)
    state = {"text_model." + k: v for k, v in encoder.transformer.state_dict().items()}
    state["text_projection.weight"] = encoder.projection
    with_projection.load_state_dict(state, strict=True, assign=True)
    with_projection.save_pretrained(folder / "text_encoder_2")
    tokenizer = copy.deepcopy(encoder.tokenizer)
    tokenizer.pad_token = "!"  # as SDXL's tokenizer_2: OpenCLIP pads with id 0
    tokenizer.save_pretrained(folder / "tokenizer_2")
