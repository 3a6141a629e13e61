"""An A1111 request's ``infotext`` field: fills the fields the request left unset (spec §7.1 step 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retouch.infotext import parse_infotext
from retouch.server.errors import ApiError
from retouch.soft_inpainting import SCRIPT_NAME, SoftInpainting

# Infotext keys → request fields (for the ``infotext`` request field, spec §7.1 step 4)
_INFOTEXT_FIELDS = {
    "Steps": ("steps", int), "Sampler": ("sampler_name", str), "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float), "Image CFG scale": ("image_cfg_scale", float), "Seed": ("seed", int),
    "Variation seed": ("subseed", int), "Variation seed strength": ("subseed_strength", float),
    "Denoising strength": ("denoising_strength", float), "Mask blur": ("mask_blur", int),
    "Masked area padding": ("inpaint_full_res_padding", int), "Noise multiplier": ("initial_noise_multiplier", float),
}
_INFOTEXT_OPTIONS = {"Clip skip": ("CLIP_stop_at_last_layers", int), "ENSD": ("eta_noise_seed_delta", int),
                     "RNG": ("randn_source", str), "Model": ("sd_model_checkpoint", str)}


def apply_infotext(values: dict[str, Any], explicitly_set: set[str],
                   restore_lora_names: Callable[[str, str | None], str] | None = None) -> None:
    """Fill the fields the request left unset from its ``infotext`` (A1111 behaviour): prompts (``<lora:…>``
    names restored from ``Lora hashes``), parameters, options, and soft inpainting's settings."""
    text = values.get("infotext")
    if not text:
        return
    prompt, negative, params = parse_infotext(text)
    if restore_lora_names is not None:
        prompt = restore_lora_names(prompt, params.get("Lora hashes"))
    filled: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    _soft_inpainting(values, params)
    for key, (name, kind) in _INFOTEXT_FIELDS.items():
        if key in params:
            filled[name] = _coerce(params[key], kind, key)
    if "Size" in params:
        w, _, h = params["Size"].partition("x")
        filled["width"], filled["height"] = _coerce(w, int, "Size"), _coerce(h, int, "Size")
    if "Seed resize from" in params:
        w, _, h = params["Seed resize from"].partition("x")
        filled["seed_resize_from_w"], filled["seed_resize_from_h"] = _coerce(w, int, "Size"), _coerce(h, int, "Size")
    if params.get("Mask mode") == "Inpaint not masked":
        filled["inpainting_mask_invert"] = 1
    if params.get("Inpaint area") == "Only masked":
        filled["inpaint_full_res"] = True
    content = {"fill": 0, "original": 1, "latent noise": 2, "latent nothing": 3}
    if params.get("Masked content") in content:
        filled["inpainting_fill"] = content[params["Masked content"]]
    for name, value in filled.items():
        if name not in explicitly_set:
            values[name] = value
    overrides = dict(values.get("override_settings") or {})
    for key, (name, kind) in _INFOTEXT_OPTIONS.items():
        if key in params and name not in overrides:
            overrides[name] = _coerce(params[key], kind, key)
    if overrides:
        values["override_settings"] = overrides


def _soft_inpainting(values: dict[str, Any], params: dict[str, str]) -> None:
    """Soft inpainting's settings from the infotext, unless the request sends the script itself."""
    try:
        settings = SoftInpainting.from_infotext(params)
    except ValueError as e:
        raise ApiError(422, f"infotext: {e}", "ValueError") from None
    scripts = dict(values.get("alwayson_scripts") or {})
    if settings is None or any(str(name).lower() == SCRIPT_NAME for name in scripts):
        return
    scripts[SCRIPT_NAME] = {"args": list(settings.infotext_params().values())}  # enabled first, then the settings
    values["alwayson_scripts"] = scripts


def _coerce(text: str, kind, key: str):
    try:
        return kind(text)
    except ValueError:
        raise ApiError(422, f"infotext: bad value for {key!r}: {text!r}", "ValueError") from None
