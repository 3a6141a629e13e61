"""What the page's buttons do: turn the fields into an A1111 API request and run it through the server's own
validation and queue (so a page job and an API job with the same parameters are the same job), report
progress, and read infotexts back into the fields. No Gradio imports: handlers get and return plain values.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import logging
import time
import uuid
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from PIL import Image

from retouch.infotext import paste_values
from retouch.outputs import next_sequence_number
from retouch.prompt_parser import merge_prompts
from retouch.serving.errors import Cancelled, DuplicateTask, QueueFull, RequestError, Unavailable, scrub
from retouch.serving.images import decode_opened, open_image
from retouch.serving.requests import job_request
from retouch.serving.schemas import Img2ImgRequest, Txt2ImgRequest
from retouch.serving.state import ServerState
from retouch.serving.values import JobOutcome
from retouch.ui.modes import Mode, ModeInputs, image_and_mask, scaled_size

logger = logging.getLogger(__name__)
RESIZE_MODES = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
MASK_MODES = ["Inpaint masked", "Inpaint not masked"]
INPAINT_FILLS = ["fill", "original", "latent noise", "latent nothing"]
INPAINT_AREAS = ["Whole picture", "Only masked"]


class PageError(ValueError):
    """A problem the page shows to the user as a message (never a stack trace)."""


@dataclass(frozen=True)
class Fields:
    """The img2img tab's parameters, as the page holds them."""

    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    resize_mode: str = RESIZE_MODES[0]
    resize_by: bool = False  # the "Resize by" tab is selected
    width: int = 512
    height: int = 512
    scale: float = 1.0
    batch_count: int = 1
    batch_size: int = 1
    cfg_scale: float = 7.0
    image_cfg_scale: float = 1.5
    denoising_strength: float = 0.75
    seed: int = -1
    variation: bool = False  # "Extra" seed options shown
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    mask_blur: int = 4
    mask_alpha: float = 0.0
    mask_mode: str = MASK_MODES[0]
    inpainting_fill: str = INPAINT_FILLS[1]
    inpaint_area: str = INPAINT_AREAS[0]
    inpaint_full_res_padding: int = 32
    styles: tuple[str, ...] = ()
    soft_inpainting: bool = False  # the accordion's checkbox, then its six settings (A1111's script args, in order)
    soft_schedule_bias: float = 1.0
    soft_preservation_strength: float = 0.5
    soft_transition_contrast_boost: float = 4.0
    soft_mask_influence: float = 0.0
    soft_difference_threshold: float = 0.5
    soft_difference_contrast: float = 2.0
    refiner: bool = False  # A1111's Refiner accordion: on, the checkpoint, where it takes over
    refiner_checkpoint: str = ""
    refiner_switch_at: float = 0.8

    @classmethod
    def from_page(cls, values: dict[str, Any]) -> Fields:
        """The fields from what the page's components hold: an emptied number box means its default (an empty
        Seed is -1, random, as in A1111)."""
        defaults = cls()
        cleaned = {name: getattr(defaults, name) if value is None else value for name, value in values.items()}
        if "styles" in cleaned:
            cleaned["styles"] = tuple(cleaned["styles"] or ())
        return cls(**cleaned)


SOFT_INPAINTING_FIELDS = ("soft_schedule_bias", "soft_preservation_strength", "soft_transition_contrast_boost",
                          "soft_mask_influence", "soft_difference_threshold", "soft_difference_contrast")


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _index(options: list[str], value: str, what: str) -> int:
    if value not in options:
        raise PageError(f"{what}: {value!r} is not one of {', '.join(options)}")
    return options.index(value)


def request_fields(fields: Fields, image: Image.Image, mask: Image.Image | None, task_id: str) -> dict[str, Any]:
    """The A1111 API request the page's fields and prepared image/mask make (A1111's ``img2img()`` arguments)."""
    width, height = scaled_size(image, fields.scale) if fields.resize_by else (fields.width, fields.height)
    request: dict[str, Any] = {
        "prompt": fields.prompt, "negative_prompt": fields.negative_prompt, "steps": int(fields.steps),
        "sampler_name": fields.sampler_name, "scheduler": fields.scheduler, "width": width, "height": height,
        "resize_mode": _index(RESIZE_MODES, fields.resize_mode, "Resize mode"), "n_iter": int(fields.batch_count),
        "batch_size": int(fields.batch_size), "cfg_scale": float(fields.cfg_scale),
        "image_cfg_scale": float(fields.image_cfg_scale), "denoising_strength": float(fields.denoising_strength),
        "seed": int(fields.seed), "subseed": int(fields.subseed) if fields.variation else -1,
        "subseed_strength": float(fields.subseed_strength) if fields.variation else 0.0,
        "seed_resize_from_w": int(fields.seed_resize_from_w) if fields.variation else 0,
        "seed_resize_from_h": int(fields.seed_resize_from_h) if fields.variation else 0,
        "init_images": [png_b64(image)], "force_task_id": task_id, "save_images": True, "send_images": True,
        "styles": list(fields.styles),
    }
    request.update(refiner_fields(fields.refiner, fields.refiner_checkpoint, fields.refiner_switch_at))
    if fields.soft_inpainting and mask is not None:
        request["alwayson_scripts"] = {"soft inpainting": {"args": [True, *(float(getattr(fields, name))
                                                                            for name in SOFT_INPAINTING_FIELDS)]}}
    if mask is not None:
        request.update(mask=png_b64(mask), mask_blur=int(fields.mask_blur),
                       inpainting_mask_invert=_index(MASK_MODES, fields.mask_mode, "Mask mode"),
                       inpainting_fill=_index(INPAINT_FILLS, fields.inpainting_fill, "Masked content"),
                       inpaint_full_res=_index(INPAINT_AREAS, fields.inpaint_area, "Inpaint area") == 1,
                       inpaint_full_res_padding=int(fields.inpaint_full_res_padding))
    return request


def refiner_fields(enabled: bool, checkpoint: str, switch_at: float) -> dict[str, Any]:
    """The request fields of the Refiner accordion (nothing when it is off or names no checkpoint)."""
    if not enabled or not checkpoint:
        return {}
    return {"refiner_checkpoint": checkpoint, "refiner_switch_at": float(switch_at)}


def new_task_id() -> str:
    return f"task({uuid.uuid4().hex[:15]})"


async def run_request(state: ServerState, fields: dict[str, Any], adjust: dict[str, Any] | None = None,
                      txt2img: bool = False) -> JobOutcome:
    """Validate and run one request exactly as ``POST /sdapi/v1/img2img`` (``txt2img``: ``/txt2img``) does;
    PageError on anything wrong. ``adjust``: :class:`JobRequest` fields the API does not offer (where a folder
    batch saves)."""
    from starlette.concurrency import run_in_threadpool

    try:
        body = Txt2ImgRequest(**fields) if txt2img else Img2ImgRequest(**fields)
        request = await run_in_threadpool(job_request, body, state)
        if adjust:
            request = dataclasses.replace(request, **adjust)
        return await state.backend.run(request)
    except RequestError as e:
        raise PageError(str(e.detail)) from None
    except QueueFull:
        raise PageError("The queue is full; try again in a moment.") from None
    except (Cancelled, DuplicateTask, Unavailable) as e:
        raise PageError(str(e)) from None
    except ValueError as e:
        raise PageError(str(e)) from None


async def generate(state: ServerState, mode: Mode, inputs: ModeInputs, fields: Fields, task_id: str,
                   extra: dict[str, Any] | None = None) -> tuple[list[Image.Image], str]:
    """Run the tab's job (``extra``: more request fields, e.g. a script's); the result images (with their infotext)
    and A1111's info JSON. Files are read and images made off the event loop."""
    from starlette.concurrency import run_in_threadpool

    request = await run_in_threadpool(page_request, state.config.max_pixels, mode, inputs, fields, task_id)
    outcome = await run_request(state, {**request, **(extra or {})})
    return outcome.images, outcome.info


def page_request(max_pixels: int, mode: Mode, inputs: ModeInputs, fields: Fields, task_id: str) -> dict[str, Any]:
    """The API request of the tab's fields and files (``inputs``: paths in the page's upload folder, as Gradio
    hands them over); each image's header is checked against ``max_pixels`` before it is decoded."""
    if not 0 <= fields.denoising_strength <= 1:
        raise PageError(f"Denoising strength must be between 0 and 1, got {fields.denoising_strength}")
    try:
        loaded = ModeInputs(**{f.name: read_uploads(getattr(inputs, f.name), max_pixels)
                               for f in dataclass_fields(ModeInputs)})
        image, mask = image_and_mask(mode, loaded, int(fields.mask_blur), float(fields.mask_alpha))
    except RequestError as e:
        raise PageError(e.detail) from None
    except ValueError as e:
        raise PageError(str(e)) from None
    return request_fields(fields, image, mask, task_id)


def read_uploads(value: Any, max_pixels: int) -> Any:
    """``value`` with every file path (also inside an image editor's value) replaced by its decoded image."""
    if isinstance(value, str):
        return read_upload(value, max_pixels)
    if isinstance(value, dict):
        return {key: read_uploads(item, max_pixels) for key, item in value.items()}
    if isinstance(value, list):
        return [read_uploads(item, max_pixels) for item in value]
    return value


def read_upload(path: str | Path, max_pixels: int, field: str = "image") -> Image.Image:
    """An uploaded file as the API reads an image: header checked first, then decoded (RequestError 413/422;
    PageError when the file is gone)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        raise PageError(f"{field}: the file is no longer on the server (unused uploads expire after an hour); "
                        "upload it again") from None
    return decode_opened(open_image(data, field, max_pixels), field)


def editor_files(inputs: ModeInputs) -> list[Path]:
    """The files of the image editors' values: the editor uploads them anew for every job, so they are the job's
    own and can go once it has read them."""
    found: list[Path] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            found.append(Path(value))
        elif isinstance(value, dict | list):
            for item in value.values() if isinstance(value, dict) else value:
                collect(item)

    for editor in (inputs.sketch, inputs.inpaint, inputs.inpaint_sketch):
        collect(editor)
    return found


def shown_infotext(images: list[Image.Image], info: str) -> str:
    """The infotext under the gallery: the first image's own, else (a grid, a script's combined picture) the job's
    first infotext, as A1111 shows ``processed.info``."""
    if images and images[0].info.get("parameters"):
        return images[0].info["parameters"]
    try:
        texts = json.loads(info).get("infotexts") or []
    except (ValueError, AttributeError):
        return ""
    return texts[0] if texts else ""


def info_html(text: str, seconds: float | None = None) -> str:
    """The infotext under the gallery, as A1111 shows it (first line the prompt)."""
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    timing = f"<p class='retouch-time'>Time taken: {seconds:.1f} s</p>" if seconds is not None else ""
    return f"<div class='infotext'><p>{body}</p>{timing}</div>"


def progress_html(state: ServerState, task_id: str | None, started: float | None) -> str:
    """Where the page's task stands: its place in the queue, or a progress bar with the ETA."""
    if not task_id:
        return ""
    lookup = state.backend.lookup(task_id)
    if lookup.queue_position is not None:
        place, of = lookup.queue_position
        return f"<div class='progress queued' data-state='queued'>In queue: {place} of {of}</div>"
    status = lookup.active
    if status is None:
        return ""
    progress = status.progress
    eta = ""
    if status.started_at is not None and progress > 0.01:
        elapsed = time.time() - status.started_at
        eta = f" · ETA {max(elapsed / progress - elapsed, 0):.0f} s"
    return (f"<div class='progress running' data-state='running'><div class='progress-bar' "
            f"style='width:{progress * 100:.0f}%'></div><span>{progress * 100:.0f}%{eta}</span></div>")


def preview_image(state: ServerState, task_id: str | None) -> Image.Image | None:
    if not task_id:
        return None
    encoded, _ = state.backend.preview(task_id)
    if not encoded:
        return None
    data = encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded
    with Image.open(io.BytesIO(base64.b64decode(data))) as image:
        image.load()
        return image.copy()


# ---------------------------------------------------------------------------------------------
# Infotext → fields (A1111's paste)
_PASTED = ("steps", "sampler_name", "scheduler", "cfg_scale", "image_cfg_scale", "seed", "width", "height",
           "denoising_strength", "mask_blur", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
           "inpaint_full_res_padding")


def fields_from_infotext(text: str, restore_lora_names=None) -> dict[str, Any]:
    """The page fields an infotext sets (``Fields`` names → values, read by :func:`retouch.infotext.paste_values`);
    fields it does not mention are left out."""
    prompt, negative, values, _ = paste_values(text, restore_lora_names)
    out: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    out.update({name: values[name] for name in _PASTED if name in values})
    for name, field, labels in (("inpainting_mask_invert", "mask_mode", MASK_MODES),
                                ("inpainting_fill", "inpainting_fill", INPAINT_FILLS),
                                ("inpaint_full_res", "inpaint_area", INPAINT_AREAS)):
        if name in values:
            out[field] = labels[int(values[name])]
    if "subseed" in values or "seed_resize_from_w" in values:
        out["variation"] = True
    if "width" in values:
        out["resize_by"] = False
    return out


def with_style(prompt: str, style_text: str) -> str:
    """A style's text merged into a prompt (A1111's rule: its ``{prompt}`` placeholder, else appended)."""
    return merge_prompts(style_text, prompt or "")


def save_images(paths: list[Path], folder: Path) -> list[Path]:
    """Copy shown images into ``folder`` as ``<number>-<name>`` (A1111's Save), never overwriting; the new files."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for path in paths:
        number = next_sequence_number(folder)
        target = folder / f"{number:05}-{path.name}"
        target.write_bytes(path.read_bytes())
        saved.append(target)
    return saved


def escape(text: str) -> str:
    return html.escape(text)


def message_of(error: Exception) -> str:
    """What the page says of a refused request: its detail, with no memory address."""
    return scrub(error.detail if isinstance(error, RequestError) else str(error))


def log_unexpected(error: Exception) -> None:
    """A failure no check foresaw: in the server's log with its traceback (expected ones are a page message)."""
    logger.error("page job failed", exc_info=error)
