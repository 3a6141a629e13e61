"""The infotext ("parameters" text) exactly as A1111 v1.10.1 writes it (spec §6)."""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    init_img_hash: str | None = None
    randn_source: str = "GPU"
    tiling: bool = False


def generation_params(info: GenerationInfo, *, seed: int, subseed: int | None, extra: Mapping[str, Any],
                      options) -> dict[str, Any]:
    """The ordered key/value pairs of the parameters line (spec §6.2). ``extra`` is
    ``extra_generation_params``: keys already in the fixed prefix are updated in place."""
    params: dict[str, Any] = {
        "Steps": info.steps,
        "Sampler": info.sampler_name,
        "Schedule type": info.scheduler_label,
        "CFG scale": info.cfg_scale,
        "Image CFG scale": info.image_cfg_scale,
        "Seed": seed,
        "Face restoration": None,
        "Size": f"{info.width}x{info.height}",
        "Model hash": info.model_hash if options.add_model_hash_to_info else None,
        "Model": info.model_name if options.add_model_name_to_info else None,
        "FP8 weight": None,
        "Cache FP16 weight for LoRA": None,
        "VAE hash": info.vae_hash if options.add_vae_hash_to_info else None,
        "VAE": info.vae_name if options.add_vae_name_to_info else None,
        **_seed_params(info, subseed),
        "Denoising strength": extra.get("Denoising strength"),
        "Conditional mask weight": info.conditional_mask_weight,
        "Clip skip": None if info.clip_skip <= 1 else info.clip_skip,
        "ENSD": info.ensd,
        "Token merging ratio": None if info.token_merging_ratio == 0 else info.token_merging_ratio,
        "Token merging ratio hr": None,
        "Init image hash": info.init_img_hash,
        "RNG": info.randn_source if info.randn_source != "GPU" else None,
        "Tiling": "True" if info.tiling else None,
    }
    params.update(extra)
    params["Version"] = VERSION_TEXT if options.add_version_to_infotext else None
    return params


def _seed_params(info: GenerationInfo, subseed: int | None) -> dict[str, Any]:
    varied = info.subseed_strength != 0
    resized = info.seed_resize_from_w > 0 and info.seed_resize_from_h > 0
    return {
        "Variation seed": subseed if varied else None,
        "Variation seed strength": info.subseed_strength if varied else None,
        "Seed resize from": f"{info.seed_resize_from_w}x{info.seed_resize_from_h}" if resized else None,
    }


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split an infotext into prompt, negative prompt and the ``Key: value`` pairs (values unquoted)."""
    lines = text.strip().split("\n")
    params_line = lines[-1] if lines and _looks_like_params(lines[-1]) else ""
    body = lines[:-1] if params_line else lines
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), _parse_params(params_line)


def _looks_like_params(line: str) -> bool:
    return line.startswith("Steps: ") or ": " in line and "," in line


def _parse_params(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " ,":
            i += 1
        colon = line.find(":", i)
        comma = line.find(",", i)
        if colon == -1 or (comma != -1 and comma < colon):
            end = comma if comma != -1 else n
            key = line[i:end].strip()
            if key:
                out[key] = key
            i = end + 1
            continue
        key = line[i:colon].strip()
        j = colon + 1
        while j < n and line[j] == " ":
            j += 1
        if j < n and line[j] == '"':
            decoder = json.JSONDecoder()
            value, end = decoder.raw_decode(line, j)
            out[key] = str(value)
            i = end
        else:
            end = line.find(",", j)
            end = n if end == -1 else end
            out[key] = line[j:end].strip()
            i = end
    return out
