"""``load_model``: a path (or ``"tiny"``) → a ready :class:`Model`. Never touches the network."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from retouch.models import diffusers_folder
from retouch.models.attention import use_upcastable_attention
from retouch.models.checkpoint import CheckpointError, StateDict, file_sha256, read_state_dict
from retouch.models.compiled import compile_mode, compile_unet
from retouch.models.components import build_text_encoders, build_unet, build_vae, build_vae_from_config
from retouch.models.detect import detect_ldm_config
from retouch.models.ldm_config import LdmConfig
from retouch.models.memory import return_free_memory_if_idle
from retouch.models.model import Model, VaeInfo
from retouch.models.paths import cache_dir

logger = logging.getLogger(__name__)

TINY_MODELS = {"tiny": "", "tiny-inpainting": "inpainting", "tiny-pix2pix": "pix2pix"}


def load_model(
    path: str | os.PathLike | None = None,
    *,
    vae: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    compile: bool | str = False,  # noqa: A002 (the word users know from torch.compile)
) -> Model:
    """Load a Stable Diffusion model (its networks only: :func:`retouch.load_model` also gives it its LoRA and
    embeddings folders).

    Args:
        path: ``None`` or ``"tiny"`` for the bundled tiny model (``"tiny-inpainting"`` /
            ``"tiny-pix2pix"``: its 9-channel inpainting and 8-channel instruct-pix2pix variants); a single-file ``.safetensors`` /
            ``.ckpt`` in the original LDM layout (a same-stem ``.yaml`` beside it is honoured); or a
            diffusers folder (with ``model_index.json``).
        vae: a separate VAE file (LDM or diffusers layout) or diffusers VAE folder (A1111 ``sd_vae``).
        device, dtype: where the networks live, and the precision of the UNet and text encoder
            (float32, bfloat16 or float16).
        vae_dtype: the VAE's precision (default: float32 on CPU, ``dtype`` elsewhere); a decode that
            produces NaN/inf in a lower precision is redone in float32 (A1111's auto-revert).
        channels_last: UNet and VAE in channels-last memory format (faster on CPU, bf16 most; measure).
        compile: compile the UNet (Inductor) on its first call per input shape, cached on disk for the next
            start: ``True`` (AOTInductor, the model's own weights attached) or ``"freeze"`` (AOTInductor, weights frozen
            in: faster, a copy of the weights per input shape in memory and on disk; jobs with networks in the
            weights run it uncompiled); seamless tiling runs it uncompiled (see :mod:`retouch.models.compiled`).

    Raises:
        ValueError (:class:`CheckpointError`): a missing, corrupt, unsafe or unsupported file; the
        message names the file and the problem.
    """
    device = torch.device(device)
    mode = compile_mode(compile)
    vae_dtype = _checked_dtypes(device, dtype, vae_dtype)
    if path is None or str(path) in TINY_MODELS:
        from retouch.models.tiny import ensure_tiny_checkpoint

        path = ensure_tiny_checkpoint(cache_dir(), TINY_MODELS[str(path or "tiny")])
    path = Path(path)
    if path.is_dir():
        model = diffusers_folder.load(path, dtype, vae_dtype)
    else:
        model = _load_single_file(path, dtype, vae_dtype)
    if vae is not None:
        model.replace_vae(*load_vae(vae, model, vae_dtype))
    if channels_last:
        model.unet.to(memory_format=torch.channels_last)
        model.vae.to(memory_format=torch.channels_last)
    use_upcastable_attention(model.unet)
    model = _to_device(model, device)
    if mode is not None:
        compile_unet(model.unet, mode)
        model.compiled = mode
    return_free_memory_if_idle()  # what the conversions left free in the heap (about 20 MB for SD1.5)
    return model


def _checked_dtypes(device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype | None) -> torch.dtype:
    """The VAE's dtype (default: float32 on CPU, ``dtype`` elsewhere); ``ValueError`` for a dtype no network
    runs in; a warning for one this CPU has no native kernels for."""
    for name, value in (("dtype", dtype), ("vae_dtype", vae_dtype)):
        if value is not None and value not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"{name} must be torch.float32, torch.bfloat16 or torch.float16, got {value}")
    vae_dtype = vae_dtype or (torch.float32 if device.type == "cpu" else dtype)
    if device.type == "cpu":
        _warn_without_native_kernels(dtype, vae_dtype)
    return vae_dtype


def cpu_has_native_kernels(dtype: torch.dtype) -> bool:
    """Whether oneDNN has this CPU's native kernels for ``dtype`` (bf16: AVX-512 or AMX; fp16: AVX-512 FP16 or
    AMX-FP16). Without them PyTorch runs bf16 and fp16 products through slow fallbacks. (A PyTorch without the
    probe is taken to have them: nothing is warned of.)"""
    if dtype == torch.float32:
        return True
    name = "_is_mkldnn_bf16_supported" if dtype == torch.bfloat16 else "_is_mkldnn_fp16_supported"
    try:
        return bool(getattr(torch.ops.mkldnn, name)())
    except (AttributeError, RuntimeError):
        return True


def _warn_without_native_kernels(*dtypes: torch.dtype) -> None:
    for dtype in dict.fromkeys(dtypes):
        if not cpu_has_native_kernels(dtype):
            name = str(dtype).removeprefix("torch.")
            logger.warning("this CPU has no native %s kernels (no AVX-512 or AMX): networks loaded in %s run many "
                           "times slower here than in float32 (docs/benchmarks.md, \"Where bf16 pays\"); load "
                           "them in float32 (--precision fp32, --vae-precision fp32)", name, name)


def _load_single_file(path: Path, dtype: torch.dtype, vae_dtype: torch.dtype) -> Model:
    state = read_state_dict(path)
    config = _config_for(path, state)
    _check_config_fits(path, state, config)
    unet = build_unet(config, state, dtype, path)
    _drop(state, "model.diffusion_model.")  # the file's copies are no longer needed: keep the load peak low
    vae = build_vae(config, state, vae_dtype, path)
    _drop(state, "first_stage_model.")
    text_encoders = build_text_encoders(config, state, dtype, path)
    _drop(state, "cond_stage_model.")
    _drop(state, "conditioner.")
    alphas_cumprod = state.get("alphas_cumprod")
    alphas_cumprod = (alphas_cumprod.to(torch.float32, copy=True) if alphas_cumprod is not None
                      else config.alphas_cumprod())
    sha = file_sha256(path, cache_dir())
    model = Model(
        name=path.stem, path=path, short_hash=sha[:10], sha256=sha, family=config.family,
        parameterization=config.parameterization, alphas_cumprod=alphas_cumprod,
        scale_factor=config.scale_factor, is_inpainting=config.is_inpainting, is_pix2pix=config.is_pix2pix,
        unet=unet, vae=vae, text_encoder=text_encoders[0], config_source=config.source, dtype=dtype,
        text_encoder_2=text_encoders[1] if len(text_encoders) > 1 else None)
    logger.info("loaded %s (%s, %s-prediction, config %s)", model.title, model.family, model.parameterization,
                config.source)
    return model


def _drop(state: StateDict, prefix: str) -> None:
    if not isinstance(state, dict):
        return  # read lazily: nothing is held
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]


def _config_for(path: Path, state: StateDict) -> LdmConfig:
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        return LdmConfig.from_yaml(yaml_path)
    return LdmConfig.bundled(detect_ldm_config(path, state, _is_v_prediction))


def _check_config_fits(path: Path, state: StateDict, config: LdmConfig) -> None:
    key = "model.diffusion_model.input_blocks.0.0.weight"
    if key not in state:
        from retouch.models.detect import describe_layout

        raise CheckpointError(path, f"not a Stable Diffusion checkpoint in the original LDM layout: "
                                    f"{describe_layout(state)}")
    found = state[key].shape[1]
    if found != config.in_channels:
        raise CheckpointError(path, f"the UNet takes {found} input channels but the config "
                                    f"({config.source}) says {config.in_channels}")


def _is_v_prediction(state: StateDict) -> bool:
    """A1111's test for SD2 768-v: run the UNet once on a flat input and look at the output's mean."""
    config = LdmConfig.bundled("v2-inference.yaml")
    unet = build_unet(config, state, torch.float32, Path("<probe>"))
    with torch.inference_mode():
        x = torch.full((1, 4, 8, 8), 0.5)
        context = torch.full((1, 2, 1024), 0.5)
        out = unet(x, torch.tensor([999]), encoder_hidden_states=context).sample
    return bool((out - x).mean().item() < -1)


def load_vae(path: str | os.PathLike, model: Model, dtype: torch.dtype, *,
             channels_last: bool = False) -> tuple[AutoencoderKL, VaeInfo]:
    """A separate VAE (LDM or diffusers layout, file or diffusers folder) for ``model``, on its device, and
    what the infotext says of it. Raises :class:`CheckpointError` for a file that is not such a VAE."""
    path = Path(path)
    if path.is_dir():
        vae, info = diffusers_folder.load_vae(path, dtype), VaeInfo(path.name, None, path)
    else:
        state = read_state_dict(path)
        vae_config = dict(model.vae.config)
        vae = build_vae_from_config(vae_config, _vae_weights(path, state, vae_config), dtype, path)
        info = VaeInfo(path.name, file_sha256(path, cache_dir())[:10], path)
    if channels_last:
        vae.to(memory_format=torch.channels_last)
    return vae.to(model.device), info


def _vae_weights(path: Path, state: StateDict, vae_config: dict) -> StateDict:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if any(k.startswith("encoder.down_blocks.") for k in state):  # already diffusers layout
        return state
    if not any(".down." in k or k.startswith("encoder.down") for k in state):
        raise CheckpointError(path, "not a VAE: no encoder.down.* (LDM) or encoder.down_blocks.* (diffusers) keys")
    return convert_ldm_vae_checkpoint(state, vae_config)


def _to_device(model: Model, device: torch.device) -> Model:
    if device.type != "cpu":
        model.unet.to(device)
        model.vae.to(device)
        for _, encoder in model.text_encoders:
            encoder.transformer.to(device)
            if encoder.projection is not None:
                encoder.projection = encoder.projection.to(device)
    model.device = device
    return model
