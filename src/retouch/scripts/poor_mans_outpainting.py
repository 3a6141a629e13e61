"""A1111's "Poor man's outpainting": widen the picture to whole 64-pixel steps, and inpaint the new border tile by
tile (``scripts/poor_mans_outpainting.py``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from PIL import Image, ImageDraw

from retouch.imageops.tiles import TileGrid, combine_grid, split_grid
from retouch.params import Job
from retouch.scripts import Script, ScriptArg, ScriptOutcome, ScriptRun

DIRECTIONS = ("left", "right", "up", "down")
FILLS = ("fill", "original", "latent noise", "latent nothing")


def layout(width: int, height: int, pixels: int, directions: list[str]) -> tuple[int, int, int, int, int, int]:
    """``(target_w, target_h, left, right, up, down)``: the widened size and how much of it lies on each side."""
    left, right, up, down = (pixels if d in directions else 0 for d in DIRECTIONS)
    target_w = math.ceil((width + left + right) / 64) * 64
    target_h = math.ceil((height + up + down) / 64) * 64
    if left > 0:
        left = left * (target_w - width) // (left + right)
    if right > 0:
        right = target_w - width - left
    if up > 0:
        up = up * (target_h - height) // (up + down)
    if down > 0:
        down = target_h - height - up
    return target_w, target_h, left, right, up, down


def _mask(size: tuple[int, int], sides: tuple[int, int, int, int], inset: int) -> Image.Image:
    """White (repaint) everywhere but the original picture, shrunk by ``inset`` on the sides that grew."""
    left, right, up, down = sides
    mask = Image.new("L", size, "white")
    ImageDraw.Draw(mask).rectangle((left + (inset if left > 0 else 0), up + (inset if up > 0 else 0),
                                    size[0] - right - (inset if right > 0 else 0),
                                    size[1] - down - (inset if down > 0 else 0)), fill="black")
    return mask


def _outside(grid: TileGrid, size: tuple[int, int], sides: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """(row, column) of the tiles that reach into the new border (the others are left as they are)."""
    left, right, up, down = sides
    return [(r, c) for r, row in enumerate(grid.rows) for c, tile in enumerate(row.tiles)
            if not (tile.x >= left and tile.x + tile.width <= size[0] - right and row.y >= up
                    and row.y + row.height <= size[1] - down)]


def run(run: ScriptRun, job: Job, args: dict[str, Any]) -> ScriptOutcome:
    params = job.params
    pixels, blur = args["pixels"], args["mask_blur"]
    fill = args["inpainting_fill"] if isinstance(args["inpainting_fill"], int) else FILLS.index(args["inpainting_fill"])
    source = params.init_images[0]
    target_w, target_h, *sides_list = layout(source.width, source.height, pixels, args["direction"])
    sides = (sides_list[0], sides_list[1], sides_list[2], sides_list[3])
    picture = Image.new("RGB", (target_w, target_h))
    picture.paste(source, (sides[0], sides[2]))
    grids = [split_grid(image, params.width, params.height, pixels)
             for image in (picture, _mask(picture.size, sides, blur * 2), _mask(picture.size, sides, blur // 2))]
    work = _outside(grids[0], picture.size, sides)
    run.control.job_count = len(work)
    base = dataclasses.replace(params, n_iter=1, batch_size=1, mask_blur_x=blur * 2, mask_blur_y=blur * 2,
                               inpainting_fill=fill, inpaint_full_res=False, seed=job.seeds[0],
                               subseed=job.subseeds[0])
    results, info, last, seed = [], None, None, job.seeds[0]
    for r, c in work:
        if run.control.interrupted:
            break
        tile, mask, latent = (g.rows[r].tiles[c].image for g in grids)
        inner = dataclasses.replace(base, init_images=[tile], image_mask=mask, latent_mask=latent, seed=seed)
        result = run.generate(inner)
        last = (inner, result)
        info = info if info is not None else result.infotexts[0]
        seed = result.seeds[0] + 1
        results.append(result.images[result.index_of_first_image])
    for i, (r, c) in enumerate(work):
        grids[0].rows[r].tiles[c].image = results[i] if i < len(results) else Image.new("RGB", (params.width,
                                                                                                  params.height))
    if last is None:
        raise ValueError("script_args: Poor man's outpainting has nothing to outpaint (no direction)")
    combined = combine_grid(grids[0])
    return ScriptOutcome([combined], [info or ""], last[0], last[1], job.seeds[0], info or "",
                         interrupted=run.control.interrupted)


def cost(job: Job, args: dict[str, Any], sizes: list[tuple[int, int]], upscalers: Any) -> tuple[int, int]:
    params = job.params
    fill, directions = args["inpainting_fill"], args["direction"]
    if fill not in (*range(len(FILLS)), *FILLS):
        raise ValueError(f"script_args[2] (Poor man's outpainting: inpainting_fill) must be 0-3 or one of "
                         f"{', '.join(FILLS)}, got {fill!r}")
    if any(d not in DIRECTIONS for d in directions):
        raise ValueError(f"script_args[3] (Poor man's outpainting: direction) takes {', '.join(DIRECTIONS)}, got "
                         f"{directions!r}")
    width, height = sizes[0] if sizes else (params.width, params.height)
    target_w, target_h, *sides = layout(width, height, args["pixels"], args["direction"])
    if not any(sides):
        raise ValueError("script_args[3] (Poor man's outpainting: direction): choose at least one of "
                         f"{', '.join(DIRECTIONS)}")
    if args["pixels"] >= min(params.width, params.height):
        raise ValueError(f"script_args[0] (Poor man's outpainting: pixels) must be smaller than the tile size "
                         f"({params.width}x{params.height}), got {args['pixels']}")
    cols = math.ceil((target_w - args["pixels"]) / (params.width - args["pixels"]))
    rows = math.ceil((target_h - args["pixels"]) / (params.height - args["pixels"]))
    per_tile = int(params.steps * min(params.denoising_strength, 0.999)) + 1
    return cols * rows * per_tile, target_w * target_h


POOR_MANS_OUTPAINTING = Script("Poor man's outpainting", (
    ScriptArg("pixels", int, 128, lo=8, hi=256),
    ScriptArg("mask_blur", int, 4, lo=0, hi=64),
    ScriptArg("inpainting_fill", (int, str), 0),
    ScriptArg("direction", list, list(DIRECTIONS)),
), run, cost)
