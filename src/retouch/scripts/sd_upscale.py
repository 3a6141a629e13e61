"""A1111's "SD upscale": upscale the picture, cut it into overlapping tiles of the job's size, img2img every tile
(seeds counting up per batch, as A1111's), and blend the tiles back (``scripts/sd_upscale.py``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from PIL import Image

from retouch.imageops.resize import flatten
from retouch.imageops.tiles import combine_grid, split_grid
from retouch.params import Job
from retouch.scripts import Script, ScriptArg, ScriptOutcome, ScriptRun
from retouch.upscalers import UpscalerInfo, Upscalers


def upscaler_at(upscalers: Upscalers, index: int | str) -> UpscalerInfo:
    """A1111's upscaler by its index in the list (the API passes the index; a name works too)."""
    names = [u.name.lower() for u in upscalers.list]
    if isinstance(index, str):
        if index.lower() not in names:
            raise ValueError(f"script_args[2] (SD upscale: upscaler_index): no upscaler named {index!r}; the "
                             f"upscalers are: {', '.join(u.name for u in upscalers.list)}")
        index = names.index(index.lower())
    if not 0 <= index < len(upscalers.list):
        raise ValueError(f"script_args[2] (SD upscale: upscaler_index) must be an index below {len(names)} into "
                         f"{', '.join(u.name for u in upscalers.list)}; got {index}")
    return upscalers.find(upscalers.list[index].name, "script_args[2] (SD upscale: upscaler_index)")


def _check_overlap(job: Job, overlap: int) -> None:
    if overlap >= min(job.params.width, job.params.height):
        raise ValueError(f"script_args[1] (SD upscale: overlap) must be smaller than the tile size "
                         f"({job.params.width}x{job.params.height}), got {overlap}")


def run(run: ScriptRun, job: Job, args: dict[str, Any]) -> ScriptOutcome:
    params = job.params
    _check_overlap(job, args["overlap"])
    upscalers = run.resources.upscalers_for(run.options)
    upscaler = upscaler_at(upscalers, args["upscaler_index"])
    run.log.extra["SD upscale overlap"] = args["overlap"]
    run.log.extra["SD upscale upscaler"] = upscaler.name
    picture = flatten(params.init_images[0], run.options.img2img_background_color)
    if upscaler.name != "None":
        picture = upscalers.upscale(picture, args["scale_factor"], upscaler, run.options, run.check)
    grid = split_grid(picture, params.width, params.height, args["overlap"])
    tiles = [tile.image for row in grid.rows for tile in row.tiles]
    batch_size = params.batch_size
    batch_count = math.ceil(len(tiles) / batch_size)
    seed, subseed = job.seeds[0], job.subseeds[0]
    run.control.job_count = batch_count * params.n_iter
    results, info, last = [], None, None
    for n in range(params.n_iter):
        next_seed, done = seed + n, []
        for i in range(batch_count):
            if run.control.interrupted:
                break
            chunk = tiles[i * batch_size:(i + 1) * batch_size]
            inner = dataclasses.replace(params, init_images=chunk, n_iter=1, seed=next_seed, subseed=subseed)
            last = (inner, run.generate(inner))
            info = info if info is not None else last[1].infotexts[0]
            next_seed = last[1].seeds[0] + 1
            done += last[1].images[last[1].index_of_first_image:]
        results.append(_combined(grid, done, params.width, params.height))
    assert last is not None and info is not None
    return ScriptOutcome(results, [info] * len(results), last[0], last[1], seed, info,
                         interrupted=run.control.interrupted)


def _combined(grid: Any, images: list[Image.Image], width: int, height: int) -> Image.Image:
    index = 0
    for row in grid.rows:
        for tile in row.tiles:
            tile.image = images[index] if index < len(images) else Image.new("RGB", (width, height))
            index += 1
    return combine_grid(grid)


def cost(job: Job, args: dict[str, Any], sizes: list[tuple[int, int]], upscalers: Any) -> tuple[int, int]:
    """(image steps, pixels of the result) before any work: the tiles of the upscaled picture, each a job."""
    params = job.params
    _check_overlap(job, args["overlap"])
    width, height = sizes[0] if sizes else (params.width, params.height)
    if upscaler_at(upscalers, args["upscaler_index"]).name != "None":
        scale = args["scale_factor"]
        width, height = int(width * scale // 8 * 8), int(height * scale // 8 * 8)
    overlap = args["overlap"]
    cols = math.ceil((width - overlap) / (params.width - overlap))
    rows = math.ceil((height - overlap) / (params.height - overlap))
    batches = math.ceil(cols * rows / params.batch_size)
    steps = min(int(params.steps * min(params.denoising_strength, 0.999)) + 1, params.steps + 1)
    return batches * params.batch_size * steps * params.n_iter, width * height


SD_UPSCALE = Script("SD upscale", (
    ScriptArg("info", object, None),
    ScriptArg("overlap", int, 64, lo=0, hi=256),
    ScriptArg("upscaler_index", (int, str), 0),
    ScriptArg("scale_factor", float, 2.0, lo=1.0, hi=4.0),
), run, cost)

