"""Tiled VAE passes: an image too large for one pass is encoded or decoded in overlapping tiles.

The tiles are spread evenly over the image, so no thin leftover tile is computed at the right or
bottom edge, and tiles are no larger than their count needs (diffusers' tiler steps by a fixed
stride and ends with a thin tile: at 1024² it decodes 1.56× the image's area, this layout 1.27×). Neighbouring tiles are blended with linear weights over their
overlap. Each tile's GroupNorm layers see only that tile, so a tiled result differs slightly from
an untiled one; larger tiles and wider overlaps make the difference smaller.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

OVERLAP = 16  # latent pixels (128 image pixels) over which neighbouring tiles are blended
TILE_SIZES = (96, 80, 64, 48, 32)  # largest tile side tried, in latent pixels (768 … 256 image pixels)


def tile_layout(length: int, max_tile: int, overlap: int = OVERLAP) -> tuple[int, list[int]]:
    """Tile size and evenly spread start offsets covering ``length`` with as few tiles of at most
    ``max_tile`` as possible, neighbours overlapping by at least ``overlap``; the tiles are made as small
    as that count allows, so no more area than needed is computed."""
    if length <= max_tile:
        return length, [0]
    count = math.ceil((length - overlap) / (max_tile - overlap))
    tile = math.ceil((length - overlap) / count) + overlap
    step = (length - tile) / (count - 1)
    return tile, [round(i * step) for i in range(count)]


def _ramp(size: int, fade_in: bool, fade_out: bool, overlap: int) -> torch.Tensor:
    weights = torch.ones(size)
    ramp = (torch.arange(overlap) + 0.5) / overlap
    if fade_in:
        weights[:overlap] = ramp
    if fade_out:
        weights[-overlap:] = ramp.flip(0)
    return weights


def tiled_pass(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, scale_in: int, scale_out: int,
               max_tile: int, overlap: int = OVERLAP, between: Callable[[], None] | None = None) -> torch.Tensor:
    """Apply ``fn`` (a VAE encode or decode of one image) to ``x`` tile by tile; returns float32.

    Tiles and overlap are in latent pixels; one latent pixel is ``scale_in`` pixels of ``x`` and
    ``scale_out`` pixels of the result (decode: 1 and 8, encode: 8 and 1). ``x``'s height and width
    must be multiples of ``scale_in``. ``between()`` runs before each tile (an interrupt check).
    """
    height, width = x.shape[-2] // scale_in, x.shape[-1] // scale_in
    tile_h, tops = tile_layout(height, max_tile, overlap)
    tile_w, lefts = tile_layout(width, max_tile, overlap)
    result: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    for top in tops:
        rows = _ramp(tile_h * scale_out, top > 0, top + tile_h < height, overlap * scale_out)
        for left in lefts:
            if between is not None:
                between()
            piece = fn(x[..., top * scale_in:(top + tile_h) * scale_in, left * scale_in:(left + tile_w) * scale_in])
            if result is None or weight is None:
                result = torch.zeros((*piece.shape[:2], height * scale_out, width * scale_out), device=piece.device)
                weight = torch.zeros((height * scale_out, width * scale_out), device=piece.device)
            cols = _ramp(tile_w * scale_out, left > 0, left + tile_w < width, overlap * scale_out)
            mask = (rows[:, None] * cols[None, :]).to(piece.device)
            area = (..., slice(top * scale_out, (top + tile_h) * scale_out),
                    slice(left * scale_out, (left + tile_w) * scale_out))
            result[area] += piece.float() * mask
            weight[area[1:]] += mask
    assert result is not None and weight is not None
    return result / weight
