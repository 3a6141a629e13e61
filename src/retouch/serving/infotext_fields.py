"""An A1111 request's ``infotext`` field: fills the fields the request left unset (spec §7.1 step 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retouch.infotext import infotext_values, parse_infotext
from retouch.serving.errors import RequestError
from retouch.soft_inpainting import SCRIPT_NAME, SoftInpainting


def apply_infotext(values: dict[str, Any], explicitly_set: set[str],
                   restore_lora_names: Callable[[str, str | None], str] | None = None) -> None:
    """Fill the fields the request left unset from its ``infotext`` (A1111 behaviour; keys as
    :data:`retouch.infotext.INFOTEXT_FIELDS` maps them): prompts (``<lora:…>`` names restored from ``Lora
    hashes``), parameters, options, and soft inpainting's settings."""
    text = values.get("infotext")
    if not text:
        return
    prompt, negative, params = parse_infotext(text)
    if restore_lora_names is not None:
        prompt = restore_lora_names(prompt, params.get("Lora hashes"))
    try:
        fields, options = infotext_values(params)
    except ValueError as e:
        raise RequestError(422, str(e), "ValueError") from None
    # "Inpaint masked" and "Whole picture" are what parsers assume when the key is absent: only the other label
    # of each says something (an infotext without inpainting keys leaves the API's defaults)
    if fields.get("inpainting_mask_invert") == 0:
        del fields["inpainting_mask_invert"]
    if fields.get("inpaint_full_res") is False:
        del fields["inpaint_full_res"]
    _soft_inpainting(values, params)
    for name, value in {"prompt": prompt, "negative_prompt": negative, **fields}.items():
        if name not in explicitly_set:
            values[name] = value
    overrides = dict(values.get("override_settings") or {})
    for name, value in options.items():
        overrides.setdefault(name, value)
    if overrides:
        values["override_settings"] = overrides


def _soft_inpainting(values: dict[str, Any], params: dict[str, str]) -> None:
    """Soft inpainting's settings from the infotext, unless the request sends the script itself."""
    try:
        settings = SoftInpainting.from_infotext(params)
    except ValueError as e:
        raise RequestError(422, f"infotext: {e}", "ValueError") from None
    scripts = dict(values.get("alwayson_scripts") or {})
    if settings is None or any(str(name).lower() == SCRIPT_NAME for name in scripts):
        return
    scripts[SCRIPT_NAME] = {"args": list(settings.infotext_params().values())}  # enabled first, then the settings
    values["alwayson_scripts"] = scripts

