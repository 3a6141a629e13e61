"""A1111's "Prompts from file or textbox": one job per line, a line being a prompt or A1111's ``--option value``
command line (``scripts/prompts_from_file.py``)."""

from __future__ import annotations

import dataclasses
import random
import shlex
from collections.abc import Callable
from typing import Any

from retouch.params import Job
from retouch.scripts import Script, ScriptArg, ScriptOutcome, ScriptRun


def _boolean(text: str) -> bool:
    return text == "true"  # A1111: anything else is false


# A1111's prompt_tags: the options a line may set, and how their values are read
TAGS: dict[str, Callable[[str], Any]] = {
    "sd_model": str, "outpath_samples": str, "outpath_grids": str, "prompt_for_display": str, "prompt": str,
    "negative_prompt": str, "styles": str, "seed": int, "subseed_strength": float, "subseed": int,
    "seed_resize_from_h": int, "seed_resize_from_w": int, "sampler_index": int, "sampler_name": str,
    "batch_size": int, "n_iter": int, "steps": int, "cfg_scale": float, "width": int, "height": int,
    "restore_faces": _boolean, "tiling": _boolean, "do_not_save_samples": _boolean, "do_not_save_grid": _boolean,
}
IGNORED = {"outpath_samples", "outpath_grids", "prompt_for_display", "sampler_index", "do_not_save_samples",
           "do_not_save_grid"}  # A1111 sets them on the processing object; they change nothing retouch returns


def parse_line(line: str) -> dict[str, Any]:
    """A1111's ``cmdargs``: ``--tag value`` pairs; ``--prompt`` / ``--negative_prompt`` take every word up to the
    next ``--``. ``ValueError`` naming the line's problem."""
    args = shlex.split(line)
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--"):
            raise ValueError(f'must start with "--": {arg}')
        if pos + 1 >= len(args):
            raise ValueError(f"missing argument for command line option {arg}")
        tag = arg[2:]
        if tag in ("prompt", "negative_prompt"):
            pos += 1
            words = [args[pos]]
            pos += 1
            while pos < len(args) and not args[pos].startswith("--"):
                words.append(args[pos])
                pos += 1
            out[tag] = " ".join(words)
            continue
        if tag not in TAGS:
            raise ValueError(f"unknown commandline option: {arg}")
        out[tag] = TAGS[tag](args[pos + 1])
        pos += 2
    return out


def lines_of(text: str) -> list[dict[str, Any]]:
    """Each non-empty line's job settings (a line A1111 cannot read as options is a plain prompt, as in A1111)."""
    jobs = []
    for line in (x.strip() for x in text.splitlines()):
        if not line:
            continue
        if "--" in line:
            try:
                jobs.append(parse_line(line))
            except ValueError:
                jobs.append({"prompt": line})
        else:
            jobs.append({"prompt": line})
    return jobs


def _params_of(base: Any, settings: dict[str, Any], position: str) -> Any:
    """The job of one line: its options over the base job's, its prompts put before or after the base's."""
    changes = {k: v for k, v in settings.items() if k not in IGNORED and k != "sd_model"}
    if "styles" in changes:
        changes["styles"] = [changes["styles"]]  # A1111 sets the string; its styles code iterates it as one name
    for name in ("prompt", "negative_prompt"):
        given, own = settings.get(name), getattr(base, name)
        if given and own:
            changes[name] = f"{given} {own}" if position == "start" else f"{own} {given}"
    return dataclasses.replace(base, **changes)


def run(run: ScriptRun, job: Job, args: dict[str, Any]) -> ScriptOutcome:
    params = job.params
    jobs = lines_of(args["prompt_txt"])
    if not jobs:
        raise ValueError("script_args[3] (Prompts from file or textbox: prompt_txt): no prompts")
    seed = params.seed
    if (args["checkbox_iterate"] or args["checkbox_iterate_batch"]) and seed in (-1, None, ""):
        seed = int(random.randrange(4294967294))
    run.control.job_count = sum(settings.get("n_iter", params.n_iter) for settings in jobs)
    images, prompts, infotexts, last = [], [], [], None
    for settings in jobs:
        if run.control.interrupted:
            break
        line = _params_of(dataclasses.replace(params, seed=seed), settings, args["prompt_position"])
        model = run.model
        if "sd_model" in settings:
            model = run.resources.checkpoint(settings["sd_model"], "script_args[3] (prompt_txt: --sd_model)")
        result = run.generate(line) if model is run.model else dataclasses.replace(run, model=model).generate(line)
        last = result
        images += result.images
        prompts += result.prompts
        infotexts += result.infotexts
        if args["checkbox_iterate"]:
            seed = int(seed) + params.batch_size * params.n_iter
    assert last is not None
    fixed = dataclasses.replace(params, seed=seed)
    return ScriptOutcome(images, infotexts, fixed, last, int(seed) if seed not in (-1, None, "") else last.seeds[0],
                         "", interrupted=run.control.interrupted,
                         overrides={"all_prompts": prompts, "all_seeds": [seed], "all_subseeds": [job.subseeds[0]]})


def cost(job: Job, args: dict[str, Any], sizes: list[tuple[int, int]], upscalers: Any) -> tuple[int, int]:
    params = job.params
    total, largest = 0, params.width * params.height
    for number, settings in enumerate(lines_of(args["prompt_txt"]), 1):
        try:  # every line's job is checked before any runs
            _params_of(params, settings, args["prompt_position"]).validate()
        except ValueError as e:
            raise ValueError(f"script_args[3] (prompt_txt), line {number}: {e}") from None
        steps, width, height = (settings.get(k, getattr(params, k)) for k in ("steps", "width", "height"))
        count = settings.get("n_iter", params.n_iter) * settings.get("batch_size", params.batch_size)
        total += count * (int(steps * min(params.denoising_strength, 0.999)) + 1)
        largest = max(largest, width * height)
    return total, largest


PROMPTS_FROM_FILE = Script("Prompts from file or textbox", (
    ScriptArg("checkbox_iterate", bool, False),
    ScriptArg("checkbox_iterate_batch", bool, False),
    ScriptArg("prompt_position", str, "start", choices=("start", "end")),
    ScriptArg("prompt_txt", str, ""),
), run, cost)
