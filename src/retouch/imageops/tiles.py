"""Overlapping tiles of an image and their blend back into one (A1111 ``images.split_grid`` /
``combine_grid``): model upscalers run tile by tile, and SD upscale samples tile by tile.

The tiles cover the image with at least ``overlap`` pixels shared between neighbours, spread evenly;
the last row and column are pushed back to end at the image's edge. An image smaller than a tile
gets one tile that reaches past its top-left corner (filled with black), as A1111's does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Tile:
    x: int  # left edge in the image (negative when the image is narrower than a tile)
    width: int
    image: Image.Image


@dataclass
class TileRow:
    y: int  # top edge in the image
    height: int
    tiles: list[Tile] = field(default_factory=list)


@dataclass
class TileGrid:
    rows: list[TileRow]
    tile_w: int
    tile_h: int
    image_w: int
    image_h: int
    overlap: int

    @property
    def tile_count(self) -> int:
        return sum(len(row.tiles) for row in self.rows)

    def map(self, fn: Callable[[Image.Image], Image.Image]) -> TileGrid:
        """A grid of ``fn(tile)`` for every tile, scaled by the factor ``fn`` scales the first tile by
        (A1111 ``upscale_with_model``: the factor is ``output.width // tile.width``)."""
        rows: list[TileRow] = []
        factor = 1
        for row in self.rows:
            out = TileRow(row.y, row.height)
            for tile in row.tiles:
                image = fn(tile.image)
                factor = image.width // tile.image.width
                out.tiles.append(Tile(tile.x * factor, tile.width * factor, image))
            out.y, out.height = row.y * factor, row.height * factor
            rows.append(out)
        return TileGrid(rows, self.tile_w * factor, self.tile_h * factor, self.image_w * factor,
                        self.image_h * factor, self.overlap * factor)


def split_grid(image: Image.Image, tile_w: int = 512, tile_h: int = 512, overlap: int = 64) -> TileGrid:
    """Cut ``image`` into ``tile_w`` × ``tile_h`` tiles overlapping by at least ``overlap`` pixels."""
    w, h = image.size
    cols = math.ceil((w - overlap) / (tile_w - overlap))
    rows = math.ceil((h - overlap) / (tile_h - overlap))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    grid = TileGrid([], tile_w, tile_h, w, h, overlap)
    for r in range(rows):
        y = int(r * dy)
        if y + tile_h >= h:
            y = h - tile_h
        row = TileRow(y, tile_h)
        for c in range(cols):
            x = int(c * dx)
            if x + tile_w >= w:
                x = w - tile_w
            row.tiles.append(Tile(x, tile_w, image.crop((x, y, x + tile_w, y + tile_h))))
        grid.rows.append(row)
    return grid


def _ramp(values: np.ndarray, overlap: int) -> Image.Image:
    return Image.fromarray((values * 255 / overlap).astype(np.uint8), "L")


def combine_grid(grid: TileGrid) -> Image.Image:
    """Paste the tiles back, each blended into its left and upper neighbour with a linear ramp across the
    overlap (RGB, ``image_w`` × ``image_h``)."""
    ramp = np.arange(grid.overlap, dtype=np.float32)
    mask_w = _ramp(ramp.reshape((1, grid.overlap)).repeat(grid.tile_h, axis=0), grid.overlap)
    mask_h = _ramp(ramp.reshape((grid.overlap, 1)).repeat(grid.image_w, axis=1), grid.overlap)
    combined = Image.new("RGB", (grid.image_w, grid.image_h))
    for row in grid.rows:
        h = row.height
        line = Image.new("RGB", (grid.image_w, h))
        for tile in row.tiles:
            if tile.x == 0:
                line.paste(tile.image, (0, 0))
                continue
            line.paste(tile.image.crop((0, 0, grid.overlap, h)), (tile.x, 0), mask=mask_w)
            line.paste(tile.image.crop((grid.overlap, 0, tile.width, h)), (tile.x + grid.overlap, 0))
        if row.y == 0:
            combined.paste(line, (0, 0))
            continue
        combined.paste(line.crop((0, 0, line.width, grid.overlap)), (0, row.y), mask=mask_h)
        combined.paste(line.crop((0, grid.overlap, line.width, h)), (0, row.y + grid.overlap))
    return combined
