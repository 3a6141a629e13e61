"""The Batch sub-tab (mode 5, spec §3.3): every image of a folder through the same queue, one job each."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from PIL import Image

from retouch.infotext import generation_parameters
from retouch.outputs import encode_image, image_texts
from retouch.server.state import ServerState
from retouch.ui import actions
from retouch.ui.actions import Fields, PageError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively), in name order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def mask_for(image: Path, masks: list[Path]) -> Path | None:
    """A single mask file serves every image; otherwise the mask whose stem is the image's."""
    if len(masks) == 1:
        return masks[0]
    return next((m for m in masks if m.stem == image.stem), None)


def png_info_fields(fields: Fields, image: Image.Image, props: list[str]) -> Fields:
    """"Append png info": the prompts are appended to, the other chosen parameters replaced by the file's."""
    text = image.info.get("parameters")
    if not isinstance(text, str) or not text:
        return fields
    params = generation_parameters(text)
    changes: dict[str, Any] = {}
    if "Prompt" in props and params.get("Prompt"):
        changes["prompt"] = f"{fields.prompt} {params['Prompt']}".strip()
    if "Negative prompt" in props and params.get("Negative prompt"):
        changes["negative_prompt"] = f"{fields.negative_prompt} {params['Negative prompt']}".strip()
    for prop, name, kind in (("Seed", "seed", int), ("CFG scale", "cfg_scale", float), ("Sampler", "sampler_name", str),
                             ("Steps", "steps", int)):
        if prop in props and prop in params:
            changes[name] = kind(float(params[prop])) if kind is int else kind(params[prop])
    return dataclasses.replace(fields, **changes)


async def run_batch(state: ServerState, fields: Fields, input_dir: str, output_dir: str, mask_dir: str,
                    use_png_info: bool, props: list[str]) -> tuple[list[Image.Image], str]:
    if not input_dir or not Path(input_dir).is_dir():
        raise PageError(f"Batch: input directory {input_dir!r} is not a folder on the server")
    images = list_images(Path(input_dir))
    if not images:
        raise PageError(f"Batch: no images in {input_dir}")
    masks = list_images(Path(mask_dir)) if mask_dir and Path(mask_dir).is_dir() else []
    out = Path(output_dir) if output_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if fields.seed == -1:  # one seed for the whole batch (A1111's fix_seed)
        fields = dataclasses.replace(fields, seed=random.randrange(4294967294))
    shown: list[Image.Image] = []
    info = ""
    limit = state.options.img2img_batch_show_results_limit
    for path in images:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
        mask = None
        if masks:
            mask_path = mask_for(path, masks)
            if mask_path is None:
                continue  # A1111: an image without a mask is skipped
            with Image.open(mask_path) as opened_mask:
                opened_mask.load()
                mask = opened_mask.copy()
        job_fields = png_info_fields(fields, image, props) if use_png_info else fields
        request = actions.request_fields(job_fields, image, mask, actions.new_task_id())
        outcome = await actions.run_request(state, {**request, "save_images": out is None})
        info = outcome.info
        for n, result in enumerate(outcome.images):
            if out is not None:
                _save(result, out, path.stem if len(outcome.images) == 1 else f"{path.stem}-{n}")
            if limit < 0 or len(shown) < limit:
                shown.append(result)
    return shown, info


def _save(image: Image.Image, folder: Path, stem: str) -> None:
    target = folder / f"{stem}.png"
    number = 1
    while target.exists():  # never overwrite: a number suffix on a clash
        target = folder / f"{stem}-{number:04d}.png"
        number += 1
    target.write_bytes(encode_image(image, "png", texts=image_texts(image)))
