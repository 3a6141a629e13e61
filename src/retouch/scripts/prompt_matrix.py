"""A1111's "Prompt matrix": ``a|b|c`` makes a picture for every combination of the parts after the first, and a
grid whose legend shows which parts each cell has (``scripts/prompt_matrix.py``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from retouch.imageops.grid import image_grid
from retouch.imageops.legend import LegendColors, draw_prompt_matrix
from retouch.params import Job
from retouch.scripts import Script, ScriptArg, ScriptOutcome, ScriptRun

TITLE = "Prompt matrix"
MAX_PARTS = 12  # variable parts: 2^12 = 4,096 pictures


def matrix_parts(job: Job, args: dict[str, Any]) -> list[str]:
    """The chosen prompt split at ``|`` (``ValueError`` for more variable parts than :data:`MAX_PARTS`)."""
    prompt = job.params.prompt if args["prompt_type"] == "positive" else job.params.negative_prompt
    text = prompt[0] if isinstance(prompt, list) else (prompt or "")
    parts = text.split("|")
    if len(parts) - 1 > MAX_PARTS:
        raise ValueError(f"{args['prompt_type']} prompt: {TITLE} takes at most {MAX_PARTS} variable parts "
                         f"(separated by |), got {len(parts) - 1}")
    return parts


def matrix_prompts(parts: list[str], *, at_start: bool, delimiter: str) -> list[str]:
    """One prompt per combination of the variable parts (combination ``n`` has part ``i`` when bit ``i`` is set)."""
    joiner = ", " if delimiter == "comma" else " "
    prompts = []
    for combination in range(2 ** (len(parts) - 1)):
        chosen = [text.strip().strip(",") for n, text in enumerate(parts[1:]) if combination & (1 << n)]
        prompts.append(joiner.join([*chosen, parts[0]] if at_start else [parts[0], *chosen]))
    return prompts


def run(run: ScriptRun, job: Job, args: dict[str, Any]) -> ScriptOutcome:
    params = job.params
    parts = matrix_parts(job, args)
    prompts = matrix_prompts(parts, at_start=args["put_at_start"], delimiter=args["variations_delimiter"])
    seed = job.seeds[0]
    changes: dict[str, Any] = {
        "n_iter": math.ceil(len(prompts) / params.batch_size),
        "seed": [seed + (i if args["different_seeds"] else 0) for i in range(len(prompts))],
        "subseed": job.subseeds[0],
        "prompt" if args["prompt_type"] == "positive" else "negative_prompt": prompts,
    }
    inner = dataclasses.replace(params, **changes)
    result = run.generate(inner)
    pictures = result.images[result.index_of_first_image:]
    options = run.options
    grid = image_grid(pictures, params.batch_size, n_rows=1 << ((len(parts) - 1) // 2),
                      background=options.grid_background_color)
    grid = draw_prompt_matrix(grid, pictures[0].width, pictures[0].height, parts, args["margin_size"],
                              LegendColors(options.grid_text_active_color, options.grid_text_inactive_color,
                                           options.grid_background_color))
    infotexts = [result.infotexts[0], *result.infotexts]
    return ScriptOutcome([grid, *pictures], infotexts, inner, result, result.seeds[0], result.infotexts[0],
                         interrupted=run.control.interrupted,
                         overrides={"subseed": result.subseeds[0], "index_of_first_image": 1})


def cost(job: Job, args: dict[str, Any], sizes: list[tuple[int, int]], upscalers: Any) -> tuple[int, int]:
    params = job.params
    count = 2 ** (len(matrix_parts(job, args)) - 1)
    batches = math.ceil(count / params.batch_size)
    per_image = int(params.steps * min(params.denoising_strength, 0.999)) + 1
    return batches * params.batch_size * per_image, count * params.width * params.height


PROMPT_MATRIX = Script(TITLE, (
    ScriptArg("put_at_start", bool, False),
    ScriptArg("different_seeds", bool, False),
    ScriptArg("prompt_type", str, "positive", choices=("positive", "negative")),
    ScriptArg("variations_delimiter", str, "comma", choices=("comma", "space")),
    ScriptArg("margin_size", int, 0, lo=0, hi=500),
), run, cost)
