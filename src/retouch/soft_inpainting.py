"""Soft inpainting: A1111's built-in extension (``extensions-builtin/soft-inpainting``), its settings.

With a mask, it keeps the mask's grey levels (``mask_round`` off), blends the original latents in at
every step by a schedule-dependent amount (:class:`~retouch.sampling.inpaint.SoftBlend`), skips the final
latent blend, and composites the original pixels back where the result changed little
(:func:`~retouch.imageops.soft_mask.adaptive_overlay_mask`). Without a mask it does nothing.

A1111 sends it as ``alwayson_scripts: {"soft inpainting": {"args": [enabled, schedule_bias,
preservation_strength, transition_contrast_boost, mask_influence, difference_threshold,
difference_contrast]}}``; missing trailing arguments take the defaults below. Values are written to the
infotext as given (``1``, not ``1.0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

SCRIPT_NAME = "soft inpainting"
ENABLED_LABEL = "Soft inpainting enabled"

Number = int | float


def _setting(default: Number, lo: Number, hi: Number, label: str) -> Any:
    return field(default=default, metadata={"lo": lo, "hi": hi, "label": label})


@dataclass(frozen=True)
class SoftInpainting:
    """The extension's settings (A1111's UI ranges; its defaults). A1111's internal names in comments."""

    schedule_bias: Number = _setting(1, 0, 8, "Soft inpainting schedule bias")  # mask_blend_power
    preservation_strength: Number = _setting(0.5, 0, 8, "Soft inpainting preservation strength")  # mask_blend_scale
    transition_contrast_boost: Number = _setting(4, 1, 32, "Soft inpainting transition contrast boost")
    mask_influence: Number = _setting(0, 0, 1, "Soft inpainting mask influence")  # composite_mask_influence
    difference_threshold: Number = _setting(0.5, 0, 8, "Soft inpainting difference threshold")
    difference_contrast: Number = _setting(2, 0, 8, "Soft inpainting difference contrast")

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise ValueError(f"soft_inpainting.{f.name} must be a number, got {value!r}")
            if not f.metadata["lo"] <= value <= f.metadata["hi"]:
                raise ValueError(f"soft_inpainting.{f.name} must be in [{f.metadata['lo']}, {f.metadata['hi']}], "
                                 f"got {value!r}")

    def infotext_params(self) -> dict[str, Any]:
        """The infotext keys A1111 writes, in its order."""
        return {ENABLED_LABEL: True, **{f.metadata["label"]: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_script_args(cls, args: Any) -> SoftInpainting | None:
        """Settings from the API's ``args`` list; None when it is not enabled. ValueError for a bad list."""
        if not isinstance(args, list | tuple):
            raise ValueError(f"alwayson_scripts['{SCRIPT_NAME}'].args must be a list, got {type(args).__name__}")
        names = [f.name for f in fields(cls)]
        if len(args) > 1 + len(names):
            raise ValueError(f"alwayson_scripts['{SCRIPT_NAME}'].args takes at most {1 + len(names)} values "
                             f"(enabled, {', '.join(names)}), got {len(args)}")
        if not args:
            return None
        enabled = args[0]
        if not isinstance(enabled, bool):
            raise ValueError(f"alwayson_scripts['{SCRIPT_NAME}'].args[0] (enabled) must be true or false, "
                             f"got {enabled!r}")
        settings = cls(**dict(zip(names, args[1:], strict=False)))
        settings.validate()
        return settings if enabled else None

    @classmethod
    def from_infotext(cls, params: Mapping[str, Any]) -> SoftInpainting | None:
        """Settings read back from an infotext's parameters (None unless ``Soft inpainting enabled: True``)."""
        if str(params.get(ENABLED_LABEL, "")).lower() != "true":
            return None
        values = {}
        for f in fields(cls):
            raw = params.get(f.metadata["label"])
            if raw is not None:
                values[f.name] = _number(raw)
        settings = cls(**values)
        settings.validate()
        return settings


def _number(value: Any) -> Number:
    text = str(value)
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_alwayson_scripts(scripts: Mapping[str, Any] | None) -> SoftInpainting | None:
    """The soft-inpainting settings in A1111's ``alwayson_scripts``; ValueError naming any other script."""
    if not scripts:
        return None
    if not isinstance(scripts, Mapping):
        raise ValueError(f"alwayson_scripts must be an object, got {type(scripts).__name__}")
    settings = None
    for name, value in scripts.items():
        if str(name).lower() != SCRIPT_NAME:
            raise ValueError(f"alwayson_scripts: script {name!r} is not supported by retouch (only "
                             f"'{SCRIPT_NAME}')")
        if not isinstance(value, Mapping) or "args" not in value:
            raise ValueError(f"alwayson_scripts['{name}'] must be an object with an 'args' list")
        settings = SoftInpainting.from_script_args(value["args"])
    return settings
