"""The Batch sub-tab (mode 5): the images of a server folder through the same queue, one job each, with A1111's
rules (:mod:`retouch.folder_batch`).

It names folders on the server, so it is off unless ``retouch serve --batch-root DIR`` (A1111 has the opposite
switch, ``--hide-ui-dir-config``). Its folders are then confined below those roots: a name is relative to a root
or absolute inside one, links that lead out are not followed, and a message names a folder as the user wrote it,
never the server's path. Scanning, reading and writing run off the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.concurrency import run_in_threadpool

from retouch.folder_batch import FolderJob, FolderPlan, plan_folder, png_info_changes
from retouch.params import fixed_seed
from retouch.serving.errors import RequestError
from retouch.serving.state import ServerState
from retouch.ui import actions
from retouch.ui.actions import Fields, PageError

MAX_BATCH_FILES = 10_000  # images one page batch may scan


class BatchRoots:
    """The folders the Batch sub-tab may read and write below (``--batch-root``; none: the tab is off)."""

    def __init__(self, roots: tuple[str, ...]):
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)

    @property
    def enabled(self) -> bool:
        return bool(self.roots)

    def inside(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return any(real.is_relative_to(root) for root in self.roots)

    def folder(self, name: str, what: str, *, create: bool = False) -> Path:
        """The folder ``name`` means below a root (made when ``create``), or :class:`PageError`."""
        if not self.enabled:
            raise PageError("Batch from folders is off on this server (start it with --batch-root DIR)")
        text = name.strip()
        if not text:
            raise PageError(f"{what}: give a folder")
        candidates = [Path(text)] if os.path.isabs(text) else [root / text for root in self.roots]
        for candidate in candidates:
            real = Path(os.path.realpath(candidate))
            if not self.inside(real):
                continue
            if create:
                try:
                    real.mkdir(parents=True, exist_ok=True)
                except OSError:
                    raise PageError(f"{what}: cannot make the folder {text!r}") from None
            if real.is_dir():
                return real
        raise PageError(f"{what}: {text!r} is not a folder below this server's batch folders")


@dataclass(frozen=True)
class BatchInputs:
    """What the Batch sub-tab holds."""

    input_dir: str = ""
    output_dir: str = ""
    mask_dir: str = ""
    use_png_info: bool = False
    png_info_props: tuple[str, ...] = ()
    png_info_dir: str = ""  # where "Append png info" reads each image's infotext (empty: from the image itself)
    uploaded: tuple[str, ...] = ()  # the "Upload" source: files uploaded to the page (then no input folder)


async def run_batch(state: ServerState, roots: BatchRoots, fields: Fields, inputs: BatchInputs, task_id: str,
                    should_stop: Callable[[], bool]) -> tuple[list[Image.Image], str, list[str]]:
    """Run the batch; the images to show (``img2img_batch_show_results_limit``), the last info JSON, warnings."""
    plan, out = await run_in_threadpool(_plan, roots, inputs)
    if inputs.png_info_dir.strip():
        inputs = dataclasses.replace(inputs, png_info_dir=str(roots.folder(inputs.png_info_dir, "PNG info directory")))
    fields = dataclasses.replace(fields, seed=fixed_seed(fields.seed))  # one seed for the whole batch
    shown: list[Image.Image] = []
    info = ""
    limit = state.options.img2img_batch_show_results_limit
    for job in plan.jobs:
        if should_stop():
            break
        request = await run_in_threadpool(_request, state, fields, inputs, job, task_id)
        adjust = {"outdir": str(out), "filename_stem": job.image.stem, "grid": False} if out is not None else {}
        outcome = await actions.run_request(state, request, adjust)
        info = outcome.info
        shown.extend(outcome.images[:max(limit - len(shown), 0)] if limit >= 0 else outcome.images)
    warnings = [f"no mask for {p.name}; skipped" for p in plan.without_mask]
    return shown, info, warnings


def _plan(roots: BatchRoots, inputs: BatchInputs) -> tuple[FolderPlan, Path | None]:
    if inputs.uploaded:  # uploads are the page's own files: no server folder needed, unless one is named
        out = roots.folder(inputs.output_dir, "Output directory", create=True) if inputs.output_dir.strip() else None
        return FolderPlan(jobs=[FolderJob(Path(p)) for p in inputs.uploaded]), out
    source = roots.folder(inputs.input_dir, "Input directory")
    masks = roots.folder(inputs.mask_dir, "Inpaint batch mask directory") if inputs.mask_dir.strip() else None
    out = roots.folder(inputs.output_dir, "Output directory", create=True) if inputs.output_dir.strip() else None
    try:
        plan = plan_folder(source, masks, follow_links=False, limit=MAX_BATCH_FILES)
    except ValueError as e:
        raise PageError(f"Input directory {inputs.input_dir.strip()!r}: {e}") from None
    plan.jobs = [job for job in plan.jobs if roots.inside(job.image) and (job.mask is None or roots.inside(job.mask))]
    if not plan.jobs:
        raise PageError(f"Batch: no images to process in {inputs.input_dir.strip()!r}")
    return plan, out


def _request(state: ServerState, fields: Fields, inputs: BatchInputs, job: FolderJob, task_id: str) -> dict[str, Any]:
    """One file's API request (in a worker thread): its image and mask read as uploads are, header first."""
    max_pixels = state.config.max_pixels
    try:
        image = actions.read_upload(job.image, max_pixels, field=job.image.name)
        mask = actions.read_upload(job.mask, max_pixels, field=job.mask.name) if job.mask is not None else None
        overrides: dict[str, Any] = {}
        if inputs.use_png_info:
            changes = png_info_changes(_infotext(image, job.image, inputs.png_info_dir), inputs.png_info_props,
                                       fields.prompt, fields.negative_prompt)
            model_hash = changes.pop("sd_model_checkpoint", None)
            if model_hash is not None:  # A1111: the checkpoint with that hash, if there is one
                with contextlib.suppress(ValueError):
                    overrides["sd_model_checkpoint"] = state.backend.find_checkpoint(model_hash)
            fields = dataclasses.replace(fields, **changes)
    except RequestError as e:
        raise PageError(e.detail) from None
    except ValueError as e:
        raise PageError(f"{job.image.name}: {e}") from None
    request = actions.request_fields(fields, image, mask, task_id)
    request["save_images"] = True
    if overrides:
        request["override_settings"] = overrides
    return request


def _infotext(image: Image.Image, path: Path, png_info_dir: str) -> str | None:
    """The infotext "Append png info" reads: the image's own, or (A1111) that of the file of the same name in the PNG
    info folder (a missing one reads as none)."""
    if not png_info_dir:
        return image.info.get("parameters")
    try:
        with Image.open(Path(png_info_dir) / path.name) as other:
            return other.info.get("parameters")
    except (OSError, ValueError):
        return None
