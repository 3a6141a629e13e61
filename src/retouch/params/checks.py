"""Field checks of the job parameters: each raises ``ValueError("<field> …, got <value>")``."""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

from PIL import Image

from retouch.imageops.resize import oriented_size
from retouch.prompt_parser import check_prompt_size

MAX_SIDE = 16384
# Seeds are used as given, negatives included (torch maps them into uint64; spec §5.1). Within ±2^63 a seed
# plus its batch offset and ENSD (< 2^33) stays a valid 64-bit generator seed.
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1


def check_text(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, str):
        check_prompt_size(name, value)
        return
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        for i, text in enumerate(value):
            check_prompt_size(f"{name}[{i}]", text)
        return
    raise ValueError(f"{name} must be a string or a non-empty list of strings, got {str(value)[:100]!r}")


def check_seed(name: str, value: Any) -> None:
    if value is None:
        return  # A1111: None means "random"
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return  # A1111: an unparsable string means "random"
    if isinstance(value, list | tuple):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{name} must be an integer or a non-empty list of integers, got {value!r}")
        for v in value:
            check_int(name, v, lo=MIN_SEED, hi=MAX_SEED)
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    check_int(name, value, lo=MIN_SEED, hi=MAX_SEED)


def check_bool(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value!r}")


def check_number(name: str, value: Any, lo: float | None = None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")


def check_ratio(name: str, value: Any) -> None:
    """A token merging ratio: 0 to 0.9, as A1111's settings slider."""
    check_number(name, value, lo=0.0)
    if value > 0.9:
        raise ValueError(f"{name} must be between 0 and 0.9, got {value!r}")


def check_choice(name: str, value: Any, enum: type[IntEnum]) -> None:
    valid = [int(e) for e in enum]
    if isinstance(value, bool) or value not in valid:
        labels = ", ".join(f"{int(e)} ({e.name.lower().replace('_', ' ')})" for e in enum)
        raise ValueError(f"{name} must be one of {labels}, got {value!r}")


def check_images(name: str, value: Any) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{name} must be a non-empty list of images, got {value!r}")
    for i, image in enumerate(value):
        if not isinstance(image, Image.Image):
            raise ValueError(f"{name}[{i}] must be a PIL image, got {type(image).__name__}")
        width, height = oriented_size(image)
        if width < 1 or height < 1:
            raise ValueError(f"{name}[{i}] is empty ({width}x{height})")
