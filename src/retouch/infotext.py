"""The infotext ("parameters" text) exactly as A1111 v1.10.1 writes it (spec §6)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from retouch import __version__

VERSION_TEXT = f"retouch {__version__}"


def quote(value: Any) -> Any:
    """JSON-quote a value whose text contains ``,``, ``:`` or a newline; leave others as they are."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(text, ensure_ascii=False)


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """``prompt`` / ``Negative prompt: …`` / ``Key: value, …`` (keys with ``None`` values skipped)."""
    line = ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def with_params(infotext: str, extra: Mapping[str, Any]) -> str:
    """``infotext`` with ``extra`` pairs added where A1111 puts ``extra_generation_params`` (before ``Version``), as
    a script's grid infotext adds its own keys to the first picture's."""
    if not extra:
        return infotext
    head, newline, line = infotext.rpartition("\n")
    added = ", ".join(f"{k}: {quote(v)}" for k, v in extra.items() if v is not None)
    at = line.rfind(", Version: ")
    line = f"{line}, {added}" if at < 0 else f"{line[:at]}, {added}{line[at:]}"
    return f"{head}{newline}{line}"


@dataclass(frozen=True)
class GenerationInfo:
    """The job-level facts an infotext reports (spec §6.2); per image only seed and subseed vary."""

    steps: int
    sampler_name: str
    scheduler_label: str
    cfg_scale: float
    image_cfg_scale: float | None
    width: int
    height: int
    model_hash: str | None = None
    model_name: str | None = None
    vae_hash: str | None = None
    vae_name: str | None = None
    subseed_strength: float = 0.0
    seed_resize_from_w: int = -1
    seed_resize_from_h: int = -1
    conditional_mask_weight: float | None = None
    clip_skip: int = 1
    ensd: int | None = None
    token_merging_ratio: float = 0.0
    token_merging_ratio_hr: float = 0.0  # 0 unless a hires pass
    init_img_hash: str | None = None
    randn_source: str = "GPU"
    tiling: bool = False


def generation_params(info: GenerationInfo, *, seed: int, subseed: int | None, extra: Mapping[str, Any],
                      options) -> dict[str, Any]:
    """The ordered key/value pairs of the parameters line (spec §6.2). ``extra`` is
    ``extra_generation_params``: keys already in the fixed prefix are updated in place."""
    params: dict[str, Any] = {
        KEYS["steps"]: info.steps,
        KEYS["sampler_name"]: info.sampler_name,
        KEYS["scheduler"]: info.scheduler_label,
        KEYS["cfg_scale"]: info.cfg_scale,
        KEYS["image_cfg_scale"]: info.image_cfg_scale,
        KEYS["seed"]: seed,
        "Face restoration": None,
        "Size": f"{info.width}x{info.height}",
        "Model hash": info.model_hash if options.add_model_hash_to_info else None,
        KEYS["sd_model_checkpoint"]: info.model_name if options.add_model_name_to_info else None,
        "FP8 weight": None,
        "Cache FP16 weight for LoRA": None,
        "VAE hash": info.vae_hash if options.add_vae_hash_to_info else None,
        "VAE": info.vae_name if options.add_vae_name_to_info else None,
        **_seed_params(info, subseed),
        KEYS["denoising_strength"]: extra.get(KEYS["denoising_strength"]),
        "Conditional mask weight": info.conditional_mask_weight,
        KEYS["CLIP_stop_at_last_layers"]: None if info.clip_skip <= 1 else info.clip_skip,
        KEYS["eta_noise_seed_delta"]: info.ensd,
        "Token merging ratio": None if info.token_merging_ratio == 0 else info.token_merging_ratio,
        "Token merging ratio hr": None if info.token_merging_ratio_hr == 0 else info.token_merging_ratio_hr,
        "Init image hash": info.init_img_hash,
        KEYS["randn_source"]: info.randn_source if info.randn_source != "GPU" else None,
        "Tiling": "True" if info.tiling else None,
    }
    params.update(extra)
    params["Version"] = VERSION_TEXT if options.add_version_to_infotext else None
    return params


def _seed_params(info: GenerationInfo, subseed: int | None) -> dict[str, Any]:
    varied = info.subseed_strength != 0
    resized = info.seed_resize_from_w > 0 and info.seed_resize_from_h > 0
    return {
        KEYS["subseed"]: subseed if varied else None,
        KEYS["subseed_strength"]: info.subseed_strength if varied else None,
        "Seed resize from": f"{info.seed_resize_from_w}x{info.seed_resize_from_h}" if resized else None,
    }


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split an infotext into prompt, negative prompt and the ``Key: value`` pairs, as A1111's
    ``parse_generation_parameters`` does: the last line holds the parameters only if it has at least
    three of them; a quoted value is JSON-unquoted, and kept as written when it cannot be."""
    *lines, last = text.strip().split("\n")
    pairs = param_pairs(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[16:].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    params = {}
    for key, value in pairs:
        if value.startswith('"') and value.endswith('"'):
            value = _unquote(value)
        params[key] = value
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


def _unquote(value: str) -> str:
    try:
        unquoted = json.loads(value)
    except ValueError:
        return value
    return unquoted if isinstance(unquoted, str) else value


def _is_key_char(c: str) -> bool:
    return c.isalnum() or c in "_ -/"


def param_pairs(line: str) -> list[tuple[str, str]]:
    """The ``(key, raw value)`` pairs that A1111's pattern
    ``\\s*(\\w[\\w \\-/]+):\\s*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)`` finds in ``line``
    (``re.findall``), in linear time: the pattern backtracks quadratically over a long run of key
    characters with no colon after it.

    A key is a run of word characters, spaces, ``-`` and ``/`` ending at a colon; the match starts at the
    run's first word character and needs two characters. No match can start inside a run that does not
    end at a colon, so the scan skips it whole.
    """
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(line)
    while i < n:
        end = i
        while end < n and _is_key_char(line[end]):
            end += 1
        if end == i:
            i += 1
            continue
        if end < n and line[end] == ":":
            start = next((k for k in range(i, end) if line[k].isalnum() or line[k] == "_"), end)
            if end - start >= 2:
                value_start = end + 1
                while value_start < n and line[value_start].isspace():
                    value_start += 1
                value, i = _param_value(line, value_start)
                pairs.append((line[start:end], value))
                continue
        i = end
    return pairs


def _param_value(line: str, start: int) -> tuple[str, int]:
    """The value at ``start`` and where the next search starts: a quoted string directly followed by a
    comma or the end, else everything up to the next comma."""
    n = len(line)
    if start < n and line[start] == '"':
        k = start + 1
        while k < n and line[k] != '"':
            k += 2 if line[k] == "\\" and k + 1 < n else 1
        if k < n and k > start + 1 and (k + 1 == n or line[k + 1] == ","):
            return line[start:k + 1], k + 2
    comma = line.find(",", start)
    if comma == -1:
        return line[start:], n
    return line[start:comma], comma + 1


# What A1111's parse_generation_parameters adds when an infotext does not say (v1.10.1, in its order)
_PASTE_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Clip skip", "1"), ("Hires resize-1", 0), ("Hires resize-2", 0), ("Hires sampler", "Use same sampler"),
    ("Hires checkpoint", "Use same checkpoint"), ("Hires prompt", ""), ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"), ("Masked content", "original"), ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32), ("RNG", "GPU"), ("Schedule type", "Automatic"), ("Schedule max sigma", 0),
    ("Schedule min sigma", 0), ("Schedule rho", 0), ("VAE Encoder", "Full"), ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def generation_parameters(text: str, restore_lora_names: Callable[[str, str | None], str] | None = None
                          ) -> dict[str, Any]:
    """A1111's ``parse_generation_parameters`` result (what ``/sdapi/v1/png-info`` returns as
    ``parameters``): ``Prompt``, ``Negative prompt``, every pair (``WxH`` values split into ``Key-1`` /
    ``Key-2``), then the defaults A1111 fills in for keys the text does not have.
    ``restore_lora_names(prompt, lora_hashes)`` renames ``<lora:…>`` tags by their hashes (the Lora extension's
    paste hook)."""
    prompt, negative, params = parse_infotext(text)
    if restore_lora_names is not None:
        prompt = restore_lora_names(prompt, params.get("Lora hashes"))
    out: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in params.items():
        width, x, height = value.partition("x")
        if x and width.isdigit() and height.isdigit() and width.isascii() and height.isascii():
            out[f"{key}-1"], out[f"{key}-2"] = width, height
        else:
            out[key] = value
    for key, value in _PASTE_DEFAULTS:
        out.setdefault(key, value)
    return out


# ---------------------------------------------------------------------------------------------
# Infotext keys ↔ A1111's fields and options: the one table the writer above writes by, and the API's
# ``infotext`` field, the page's paste button and PNG Info, and the folder batch's "Append png info" read by.
@dataclass(frozen=True)
class InfotextField:
    key: str  # as written: "CFG scale"
    name: str  # A1111's field (or, with ``option``, its setting): "cfg_scale"
    kind: type  # int, float or str
    option: bool = False  # an option (``override_settings``) rather than a field


INFOTEXT_FIELDS: tuple[InfotextField, ...] = (
    InfotextField("Steps", "steps", int), InfotextField("Sampler", "sampler_name", str),
    InfotextField("Schedule type", "scheduler", str), InfotextField("CFG scale", "cfg_scale", float),
    InfotextField("Image CFG scale", "image_cfg_scale", float), InfotextField("Seed", "seed", int),
    InfotextField("Variation seed", "subseed", int), InfotextField("Variation seed strength", "subseed_strength", float),
    InfotextField("Denoising strength", "denoising_strength", float), InfotextField("Mask blur", "mask_blur", int),
    InfotextField("Masked area padding", "inpaint_full_res_padding", int),
    InfotextField("Noise multiplier", "initial_noise_multiplier", float),
    InfotextField("Clip skip", "CLIP_stop_at_last_layers", int, option=True),
    InfotextField("ENSD", "eta_noise_seed_delta", int, option=True),
    InfotextField("RNG", "randn_source", str, option=True),
    InfotextField("Token merging ratio", "token_merging_ratio", float, option=True),
    InfotextField("Token merging ratio hr", "token_merging_ratio_hr", float, option=True),
    InfotextField("Model", "sd_model_checkpoint", str, option=True),
    InfotextField("Hires upscale", "hr_scale", float), InfotextField("Hires steps", "hr_second_pass_steps", int),
    InfotextField("Hires upscaler", "hr_upscaler", str), InfotextField("Hires sampler", "hr_sampler_name", str),
    InfotextField("Hires schedule type", "hr_scheduler", str),
    InfotextField("Hires checkpoint", "hr_checkpoint_name", str), InfotextField("Hires prompt", "hr_prompt", str),
    InfotextField("Hires negative prompt", "hr_negative_prompt", str),
    InfotextField("Refiner", "refiner_checkpoint", str), InfotextField("Refiner switch at", "refiner_switch_at", float),
)
HIRES_KEYS = ("Hires upscale", "Hires upscaler", "Hires resize")  # with "Denoising strength": the hires fix was on
KEYS = {f.name: f.key for f in INFOTEXT_FIELDS}
# keys whose value is a pair (``WxH``) or a label of an integer field
SIZE_FIELDS = {"Size": ("width", "height"), "Seed resize from": ("seed_resize_from_w", "seed_resize_from_h"),
               "Hires resize": ("hr_resize_x", "hr_resize_y")}
LABELS = {
    "Mask mode": ("inpainting_mask_invert", ("Inpaint masked", "Inpaint not masked")),
    "Masked content": ("inpainting_fill", ("fill", "original", "latent noise", "latent nothing")),
    "Inpaint area": ("inpaint_full_res", ("Whole picture", "Only masked")),
}


def infotext_values(params: Mapping[str, str], *, strict: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The A1111 fields and the options an infotext's pairs (:func:`parse_infotext`) set, typed. A value that is
    not a (finite) number of its kind is a ``ValueError`` naming the key when ``strict``, else left out."""
    fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for entry in INFOTEXT_FIELDS:
        if entry.key in params and (value := _typed(params[entry.key], entry.kind, entry.key, strict)) is not None:
            (options if entry.option else fields)[entry.name] = value
    for key, names in SIZE_FIELDS.items():
        if key in params:
            first, _, second = str(params[key]).partition("x")
            pair = [_typed(first, int, key, strict), _typed(second, int, key, strict)]
            if None not in pair:
                fields.update(zip(names, pair, strict=True))
    for key, (name, labels) in LABELS.items():
        if params.get(key) in labels:
            index = labels.index(params[key])
            fields[name] = bool(index) if name == "inpaint_full_res" else index
    if "Denoising strength" in params and any(key in params for key in HIRES_KEYS):
        fields["enable_hr"] = True
    return fields, options


def _typed(text: Any, kind: type, key: str, strict: bool) -> Any:
    try:  # the API takes a value as written; a pasted one may be "12.0" for 12
        value = int(float(text)) if kind is int and not strict else kind(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError
        return value
    except (TypeError, ValueError, OverflowError):
        if strict:
            raise ValueError(f"infotext: bad value for {key!r}: {str(text)[:40]!r}") from None
        return None


def paste_values(text: str, restore_lora_names: Callable[[str, str | None], str] | None = None
                 ) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """What A1111's paste puts in the fields: ``(prompt, negative prompt, fields, options)``, with the defaults
    A1111's parser assumes for the keys a text does not have; values that are not numbers are left out."""
    prompt, negative, params = parse_infotext(text)
    if restore_lora_names is not None:
        prompt = restore_lora_names(prompt, params.get("Lora hashes"))
    defaults = {key: str(value) for key, value in _PASTE_DEFAULTS if "-" not in key}
    fields, options = infotext_values({**defaults, **params}, strict=False)
    return prompt, negative, fields, options
