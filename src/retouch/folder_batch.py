"""Batch img2img from folders with A1111's rules (``modules/img2img.py: process_batch``; spec §3.3 mode 5), for
the command line (``retouch img2img --input-dir``) and the page's Batch sub-tab.

* **Images:** every ``.png/.jpg/.jpeg/.webp/.tif/.tiff`` below the input folder, recursively, in A1111's walk
  order (folders, then files within each, in natural order).
* **Seed:** one for the whole batch: ``-1`` is drawn once (A1111's ``fix_seed``: :func:`retouch.params.fixed_seed`),
  not once per file.
* **Masks:** the files directly in the mask folder (A1111's ``listfiles``: not below it, hidden ones left out).
  A single file is every image's mask; otherwise an image's mask is the first file named ``<image stem>.*``,
  and an image without one is skipped with a warning.
* **"Append png info":** the chosen parameters of each file's infotext (or of the file of the same name in the PNG
  info folder): its prompts are appended after a space, its Seed, CFG scale, Sampler and Steps replace the job's.
* **Outputs** are named after their input: ``<stem>`` or ``<stem>-<generation number>`` (:class:`Outputs`'s
  ``filename_stem``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retouch.infotext import infotext_values, parse_infotext
from retouch.models.paths import list_files, natural_key, walk_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
PNG_INFO_PROPS = ("Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps", "Model hash")


@dataclass(frozen=True)
class FolderJob:
    """One input file of a folder batch and its mask file (None: no mask folder)."""

    image: Path
    mask: Path | None = None


@dataclass
class FolderPlan:
    jobs: list[FolderJob] = field(default_factory=list)
    without_mask: list[Path] = field(default_factory=list)  # skipped (A1111 warns and goes on)


def plan_folder(input_dir: Path, mask_dir: Path | None = None, *, follow_links: bool = True,
                limit: int | None = None) -> FolderPlan:
    """The jobs of a folder batch; ``ValueError`` when ``input_dir`` holds more than ``limit`` images."""
    images: list[Path] = []
    for path in walk_files(input_dir, IMAGE_SUFFIXES, follow_links=follow_links):
        images.append(path)
        if limit is not None and len(images) > limit:
            raise ValueError(f"input folder: more than {limit} images; split the batch")
    masks = list_files(mask_dir) if mask_dir is not None else []
    plan = FolderPlan()
    for image in images:
        if not masks:
            plan.jobs.append(FolderJob(image))
        elif (mask := mask_for(image, masks, mask_dir)) is not None:
            plan.jobs.append(FolderJob(image, mask))
        else:
            plan.without_mask.append(image)
    return plan


def mask_for(image: Path, masks: list[Path], mask_dir: Path | None) -> Path | None:
    """A single mask file serves every image; otherwise the first file of the mask folder named ``<stem>.*``."""
    if len(masks) == 1:
        return masks[0]
    if mask_dir is None:
        return None
    found = sorted(mask_dir.glob(f"{image.stem}.*"), key=lambda p: natural_key(p.name))  # a glob, as A1111's
    return next((p for p in found if p.is_file()), None)


def png_info_changes(infotext: str | None, props: Collection[str], prompt: str, negative_prompt: str
                     ) -> dict[str, Any]:
    """What "Append png info" changes, as A1111 field names → values; ``{}`` when the file has no infotext.
    ``Model hash`` becomes ``sd_model_checkpoint`` (for the caller to find a checkpoint by). ``ValueError`` for a
    chosen value that is no number."""
    if not infotext:
        return {}
    text, negative, params = parse_infotext(infotext)
    chosen = {key: value for key, value in params.items() if key in props}
    fields, _ = infotext_values({k: v for k, v in chosen.items() if k in _REPLACED})
    changes: dict[str, Any] = {name: fields[name] for name in _REPLACED.values() if name in fields}
    if "Prompt" in props:
        changes["prompt"] = prompt + " " + text
    if "Negative prompt" in props:
        changes["negative_prompt"] = negative_prompt + " " + negative
    if "Model hash" in chosen:
        changes["sd_model_checkpoint"] = str(chosen["Model hash"])
    return changes


_REPLACED = {"Seed": "seed", "CFG scale": "cfg_scale", "Sampler": "sampler_name", "Steps": "steps"}
