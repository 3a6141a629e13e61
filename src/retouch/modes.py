"""The integer modes A1111 uses at its edges, as enums for the core (a leaf module)."""

from __future__ import annotations

from enum import IntEnum


class ResizeMode(IntEnum):
    JUST_RESIZE = 0
    CROP_AND_RESIZE = 1
    RESIZE_AND_FILL = 2
    LATENT_UPSCALE = 3


class InpaintFill(IntEnum):
    FILL = 0
    ORIGINAL = 1
    LATENT_NOISE = 2
    LATENT_NOTHING = 3
