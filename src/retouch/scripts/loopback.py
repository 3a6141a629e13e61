"""A1111's "Loopback": img2img the picture again and again, each result the next input, the denoising strength
moving towards its final value along a curve (``scripts/loopback.py``); a grid of the loops first."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from retouch.imageops.grid import image_grid
from retouch.modes import InpaintFill
from retouch.params import Job
from retouch.scripts import Script, ScriptArg, ScriptOutcome, ScriptRun

CURVES = ("Aggressive", "Linear", "Lazy")


def strength_at(loop: int, loops: int, first: float, final: float, curve: str) -> float:
    """A1111's ``calculate_denoising_strength``."""
    if loops == 1:
        return first
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        share = math.sin(progress * math.pi * 0.5)
    elif curve == "Lazy":
        share = 1 - math.cos(progress * math.pi * 0.5)
    else:
        share = progress
    return first + (final - first) * share


def run(run: ScriptRun, job: Job, args: dict[str, Any]) -> ScriptOutcome:
    params, control = job.params, run.control
    loops, final, curve = args["loops"], args["final_denoising_strength"], args["denoising_curve"]
    run.log.extra.clear()  # A1111 replaces p.extra_generation_params with the script's two keys
    run.log.extra.update({"Final denoising strength": final, "Denoising curve": curve})
    seed, subseed, first = job.seeds[0], job.subseeds[0], params.denoising_strength
    control.job_count = loops * params.n_iter
    history, kept, info, last = [], [], None, None
    current = dataclasses.replace(params, batch_size=1, n_iter=1, seed=seed, subseed=subseed)
    for _ in range(params.n_iter):
        current = dataclasses.replace(current, init_images=params.init_images, denoising_strength=first)
        picture = None
        for i in range(loops):
            result = run.generate(current)
            last = (current, result)
            if control.interrupted:  # A1111 drops the cut-short picture; it is kept here (nothing is lost)
                if result.images:
                    history.append(result.images[result.index_of_first_image])
                    kept.append(history[-1])
                    info = info if info is not None else result.infotexts[0]
                break
            info = info if info is not None else result.infotexts[0]
            picture = result.images[result.index_of_first_image]
            current = dataclasses.replace(current, seed=result.seeds[0] + 1,
                                          denoising_strength=strength_at(i + 1, loops, first, final, curve),
                                          init_images=[picture], inpainting_fill=int(InpaintFill.ORIGINAL))
            if params.n_iter == 1:
                history.append(picture)
                kept.append(picture)
        if params.n_iter > 1 and picture is not None and not control.interrupted:
            history.append(picture)
            kept.append(picture)
        current = dataclasses.replace(current, inpainting_fill=params.inpainting_fill)
        if control.interrupted:
            break
    assert last is not None
    info = info if info is not None else last[1].infotexts[0]
    images = kept
    if len(history) > 1 and run.options.return_grid:
        images = [image_grid(history, 1, n_rows=1, background=run.options.grid_background_color), *kept]
    last_params = dataclasses.replace(last[0], denoising_strength=current.denoising_strength)
    return ScriptOutcome(images, [info] * len(images), last_params, last[1], seed, info,
                         interrupted=control.interrupted)


def cost(job: Job, args: dict[str, Any], sizes: list[tuple[int, int]], upscalers: Any) -> tuple[int, int]:
    params = job.params
    per_loop = int(params.steps * min(params.denoising_strength, 0.999)) + 1
    return args["loops"] * params.n_iter * max(per_loop, params.steps), params.width * params.height * args["loops"]


LOOPBACK = Script("Loopback", (
    ScriptArg("loops", int, 4, lo=1, hi=32),
    ScriptArg("final_denoising_strength", float, 0.5, lo=0.0, hi=1.0),
    ScriptArg("denoising_curve", str, "Linear", choices=CURVES),
    ScriptArg("append_interrogation", str, "None", choices=("None",)),
), run, cost)
