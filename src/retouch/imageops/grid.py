"""A1111's image grid (``images.image_grid``)."""

from __future__ import annotations

import math

from PIL import Image, ImageColor


def image_grid(images: list[Image.Image], batch_size: int = 1, *, n_rows: int = -1,
               prevent_empty_spots: bool = False, background: str = "#ffffff") -> Image.Image:
    """Tile ``images`` row by row; rows = ``n_rows`` if > 0, ``batch_size`` if 0, else about √n."""
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = batch_size
    elif prevent_empty_spots:
        rows = math.floor(math.sqrt(len(images)))
        while len(images) % rows != 0:
            rows -= 1
    else:
        rows = round(math.sqrt(len(images)))
    rows = min(rows, len(images))
    cols = math.ceil(len(images) / rows)
    w, h = map(max, zip(*(img.size for img in images), strict=True))
    grid = Image.new("RGB", size=(cols * w, rows * h), color=ImageColor.getcolor(background, "RGB"))
    for i, img in enumerate(images):
        dx = 0 if img.width == w else (w - img.width) // 2
        dy = 0 if img.height == h else (h - img.height) // 2
        grid.paste(img, box=(i % cols * w + dx, i // cols * h + dy))
    return grid
