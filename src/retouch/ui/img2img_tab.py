"""A1111's img2img tab: its sub-tabs (img2img, Sketch, Inpaint, Inpaint sketch, Inpaint upload, Batch) with their
mode semantics, resize, inpainting and soft-inpainting controls, and one Generate per sub-tab that sends only that
sub-tab's inputs (the visible Generate runs the selected one's, in the browser: :mod:`retouch.ui.assets`)."""

from __future__ import annotations

import time
from dataclasses import fields as dataclass_fields
from typing import Any

import gradio as gr
from PIL import Image
from starlette.concurrency import run_in_threadpool

from retouch.folder_batch import PNG_INFO_PROPS
from retouch.serving.state import ServerState
from retouch.ui import actions, networks, scripts_ui, widgets, wiring
from retouch.ui.actions import INPAINT_AREAS, INPAINT_FILLS, MASK_MODES, RESIZE_MODES, Fields, PageError
from retouch.ui.assets import IMG2IMG_TRIGGERS
from retouch.ui.batch import BatchInputs, BatchRoots, run_batch
from retouch.ui.modes import Mode, ModeInputs
from retouch.ui.uploads import UploadFolder
from retouch.ui.wiring import refusal

TAB_IDS = dict(zip(Mode, IMG2IMG_TRIGGERS, strict=True))  # Mode → A1111's sub-tab id
TRIGGERS = dict(zip(Mode, IMG2IMG_TRIGGERS.values(), strict=True))  # Mode → trigger name (and its sub-tab's)
FIELD_NAMES = [f.name for f in dataclass_fields(Fields)]
# Image inputs arrive as paths in the page's upload folder (checked by retouch.ui.guard): Gradio neither decodes
# nor converts them (that would happen on the event loop, before any size check); the handlers read them.
FILE: dict[str, Any] = {"type": "filepath", "image_mode": None, "format": "png"}
# What each Generate sends besides the fields: trigger name → (mode, inputs)
_BATCH_INPUTS = ("batch_output_dir", "batch_mask_dir", "batch_use_png_info", "batch_png_info_props",
                 "batch_png_info_dir")
RUNS: dict[str, tuple[Mode, tuple[str, ...]]] = {
    "img2img": (Mode.IMG2IMG, ("image",)), "sketch": (Mode.SKETCH, ("sketch",)),
    "inpaint": (Mode.INPAINT, ("inpaint",)), "inpaint_sketch": (Mode.INPAINT_SKETCH, ("inpaint_sketch",)),
    "inpaint_upload": (Mode.INPAINT_UPLOAD, ("upload_image", "upload_mask")),
    "batch": (Mode.BATCH, ("batch_input_dir", *_BATCH_INPUTS)),
    "batch_upload": (Mode.BATCH, ("batch_upload", *_BATCH_INPUTS)),
}
COPY_TARGETS = {Mode.IMG2IMG: "image", Mode.SKETCH: "sketch", Mode.INPAINT: "inpaint",
                Mode.INPAINT_SKETCH: "inpaint_sketch"}


def build(state: ServerState) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    widgets.toprow(ui, "img2img", list(state.styles.styles))
    with gr.Row():
        with gr.Column(scale=1), gr.Tabs(elem_id="img2img_extra_tabs"):
            with gr.Tab("Generation", elem_id="img2img_generation_tab"):
                _mode_tabs(ui, bool(state.config.batch_roots))
                _resize_controls(ui)
                widgets.sampling(ui, "img2img")
                widgets.batch_and_cfg(ui, "img2img")
                ui["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                     elem_id="img2img_denoising_strength")
                widgets.seed(ui, "img2img")
                _inpaint_controls(ui)
                widgets.refiner(ui, "img2img", [c.title for c in state.backend.checkpoints()])
                scripts_ui.build(ui, state)
            networks.build(ui, state, "img2img")
        with gr.Column(scale=1):
            widgets.results(ui, "img2img", [("img2img", "Send to img2img"), ("inpaint", "Send to inpaint"),
                                            ("sketch", "Send to sketch")])
    networks.hidden(ui, "img2img")
    ui["triggers"] = {name: gr.Button(f"Generate ({name})", elem_id=f"img2img_generate_{name}",
                                      elem_classes=["retouch-trigger"]) for name in RUNS}
    return ui


def _mode_tabs(ui: dict[str, Any], batch_enabled: bool) -> None:
    brush = gr.Brush(default_size=24, colors=["#ffffff"], color_mode="fixed")
    editors = {"sources": ["upload", "clipboard"], "height": 420, **FILE}
    with gr.Tabs(elem_id="mode_img2img") as ui["mode_tabs"]:
        with gr.Tab("img2img", id=int(Mode.IMG2IMG), elem_id=TAB_IDS[Mode.IMG2IMG]):
            ui["image"] = gr.Image(label="Image for img2img", elem_id="img2img_image", **editors)
            _copy_buttons(ui, Mode.IMG2IMG)
        with gr.Tab("Sketch", id=int(Mode.SKETCH), elem_id=TAB_IDS[Mode.SKETCH]):
            ui["sketch"] = gr.ImageEditor(label="Image for img2img", elem_id="img2img_sketch",
                                          brush=gr.Brush(default_size=12), **editors)
            _copy_buttons(ui, Mode.SKETCH)
        with gr.Tab("Inpaint", id=int(Mode.INPAINT), elem_id=TAB_IDS[Mode.INPAINT]):
            ui["inpaint"] = gr.ImageEditor(label="Image for inpainting with mask", elem_id="img2maskimg", brush=brush,
                                           **editors)
            _copy_buttons(ui, Mode.INPAINT)
        with gr.Tab("Inpaint sketch", id=int(Mode.INPAINT_SKETCH), elem_id=TAB_IDS[Mode.INPAINT_SKETCH]):
            ui["inpaint_sketch"] = gr.ImageEditor(label="Color sketch inpainting", elem_id="inpaint_sketch",
                                                  brush=gr.Brush(default_size=12), **editors)
            _copy_buttons(ui, Mode.INPAINT_SKETCH)
        with gr.Tab("Inpaint upload", id=int(Mode.INPAINT_UPLOAD), elem_id=TAB_IDS[Mode.INPAINT_UPLOAD]):
            ui["upload_image"] = gr.Image(label="Image", elem_id="img_inpaint_base", **FILE, sources=["upload"])
            ui["upload_mask"] = gr.Image(label="Mask", elem_id="img_inpaint_mask", **FILE, sources=["upload"])
        with gr.Tab("Batch", id=int(Mode.BATCH), elem_id=TAB_IDS[Mode.BATCH]):
            _batch_tab(ui, batch_enabled)


def _copy_buttons(ui: dict[str, Any], source: Mode) -> None:
    """A1111's "Copy image to" row under each picture: the picture into another sub-tab."""
    with gr.Row(elem_id=f"img2img_copy_to_{TRIGGERS[source]}"):
        gr.HTML("Copy image to:", elem_id=f"img2img_label_copy_to_{TRIGGERS[source]}")
        for target in COPY_TARGETS:
            if target != source:
                ui.setdefault("copy_buttons", {})[source, target] = gr.Button(
                    TRIGGERS[target].replace("_", " "), size="sm",
                    elem_id=f"img2img_copy_from_{TRIGGERS[source]}_to_{TRIGGERS[target]}")


def _batch_tab(ui: dict[str, Any], enabled: bool) -> None:
    with gr.Tabs(elem_id="img2img_batch_source"):
        with gr.Tab("From directory", elem_id="img2img_batch_from_dir_tab"):
            if enabled:
                gr.Markdown("Process the images of a folder on the server (`Input directory`, below the folders "
                            "this server allows); results go to `Output directory`. With an `Inpaint batch mask "
                            "directory`, its one mask (or each image's same-named mask) is used.")
            else:
                gr.Markdown("Batch from folders is off on this server: it reads and writes server folders, so it is "
                            "enabled only by starting the server with `--batch-root DIR`. Uploaded files can be "
                            "processed (the Upload tab).", elem_id="img2img_batch_off")
            ui["batch_input_dir"] = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir",
                                               interactive=enabled)
        with gr.Tab("Upload", elem_id="img2img_batch_upload_tab"):
            ui["batch_upload"] = gr.File(label="Files", file_count="multiple", file_types=["image"],
                                         elem_id="img2img_batch_upload")
    ui["batch_output_dir"] = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir",
                                        interactive=enabled)
    ui["batch_mask_dir"] = gr.Textbox(label="Inpaint batch mask directory (required for inpaint batch processing "
                                      "only)", elem_id="img2img_batch_inpaint_mask_dir", interactive=enabled)
    ui["batch_use_png_info"] = gr.Checkbox(label="Append png info to prompts", elem_id="img2img_batch_use_png_info")
    ui["batch_png_info_props"] = gr.CheckboxGroup(list(PNG_INFO_PROPS), label="Parameters to take from png info",
                                                  elem_id="img2img_batch_png_info_props")
    ui["batch_png_info_dir"] = gr.Textbox(label="PNG info directory", placeholder="Leave empty to use input directory",
                                          elem_id="img2img_batch_png_info_dir", interactive=enabled)


def _resize_controls(ui: dict[str, Any]) -> None:
    ui["resize_mode"] = gr.Radio(RESIZE_MODES, value=RESIZE_MODES[0], label="Resize mode", elem_id="resize_mode")
    with gr.Tabs(elem_id="img2img_tabs_resize"):
        with gr.Tab("Resize to", id="to", elem_id="img2img_tab_resize_to") as to_tab:
            widgets.size(ui, "img2img", detect=True)
        with gr.Tab("Resize by", id="by", elem_id="img2img_tab_resize_by") as by_tab:
            ui["scale"] = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id="img2img_scale")
            ui["scale_preview"] = gr.HTML(elem_id="img2img_scale_resolution_preview")
    ui["resize_by"] = gr.State(False)
    ui["resize_tab_list"] = [to_tab, by_tab]


def _inpaint_controls(ui: dict[str, Any]) -> None:
    with gr.Column(elem_id="inpaint_controls"):
        with gr.Row():
            ui["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
            ui["mask_alpha"] = gr.Slider(0, 100, value=0, step=1, label="Mask transparency",
                                         elem_id="img2img_mask_alpha")
        ui["mask_mode"] = gr.Radio(MASK_MODES, value=MASK_MODES[0], label="Mask mode", elem_id="img2img_mask_mode")
        ui["inpainting_fill"] = gr.Radio(INPAINT_FILLS, value=INPAINT_FILLS[1], label="Masked content",
                                         elem_id="img2img_inpainting_fill")
        with gr.Row():
            ui["inpaint_area"] = gr.Radio(INPAINT_AREAS, value=INPAINT_AREAS[0], label="Inpaint area",
                                          elem_id="img2img_inpaint_full_res")
            ui["inpaint_full_res_padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                       elem_id="img2img_inpaint_full_res_padding")
        _soft_inpainting(ui)


def _soft_inpainting(ui: dict[str, Any]) -> None:
    """A1111's built-in soft inpainting extension, with its defaults and ranges."""
    with gr.Accordion("Soft inpainting", open=False, elem_id="soft_inpainting_accordion"):
        ui["soft_inpainting"] = gr.Checkbox(label="Soft inpainting", value=False, elem_id="soft_inpainting_enabled")
        for name, label, lo, hi, step, value, elem_id in (
                ("soft_schedule_bias", "Schedule bias", 0, 8, 0.1, 1.0, "mask_blend_power"),
                ("soft_preservation_strength", "Preservation strength", 0, 8, 0.05, 0.5, "mask_blend_scale"),
                ("soft_transition_contrast_boost", "Transition contrast boost", 1, 32, 0.5, 4.0,
                 "inpaint_detail_preservation"),
                ("soft_mask_influence", "Mask influence", 0, 1, 0.05, 0.0, "composite_mask_influence"),
                ("soft_difference_threshold", "Difference threshold", 0, 8, 0.25, 0.5,
                 "composite_difference_threshold"),
                ("soft_difference_contrast", "Difference contrast", 0, 8, 0.25, 2.0, "composite_difference_contrast")):
            ui[name] = gr.Slider(lo, hi, value=value, step=step, label=label, elem_id=elem_id)


# ---------------------------------------------------------------------------------------------
# Behaviour
def field_components(ui: dict[str, Any]) -> list[Any]:
    return [ui[name] for name in FIELD_NAMES]


def wire(state: ServerState, ui: dict[str, Any], uploads: UploadFolder) -> None:
    stopping: set[str] = set()
    wiring.wire_common(state, ui, "img2img", uploads, stopping)
    for by, tab in enumerate(ui["resize_tab_list"]):
        tab.select(lambda b=bool(by): b, None, ui["resize_by"], **wiring.QUIET)
    preview_inputs = [ui["scale"], ui["image"], ui["upload_image"]]
    for component in (ui["scale"], ui["image"], ui["upload_image"]):
        component.change(_scale_preview, preview_inputs, ui["scale_preview"], **wiring.QUIET)
    ui["size_from_image"].click(None, None, [ui["width"], ui["height"]], js="() => retouchSizeFromImage()")
    for name, trigger in ui["triggers"].items():
        inputs = [ui["task"], ui["started"], *(ui[key] for key in RUNS[name][1]), *field_components(ui),
                  *scripts_ui.components(ui)]
        started = trigger.click(wiring.start, None, wiring.start_outputs(ui), concurrency_limit=None, queue=False,
                                show_progress="hidden")
        started.then(_run_mode(state, uploads, stopping, name, ui), inputs,
                     [ui["gallery"], ui["info"], ui["generation_info"], ui["message"], *wiring.done_outputs(ui)],
                     concurrency_limit=None, show_progress="hidden"
                     ).then(None, js="() => retouchDone('img2img')")
    ui["paste"].click(_paste(state), ui["prompt"], [*field_components(ui), ui["seed_extras"]], **wiring.QUIET)
    scripts_ui.wire(ui, state)
    for name, mode, target in (("send_img2img", Mode.IMG2IMG, "image"), ("send_inpaint", Mode.INPAINT, "inpaint"),
                               ("send_sketch", Mode.SKETCH, "sketch")):
        ui[name].click(_send(state, mode, target == "image"), [ui["gallery"], ui["selected"]],
                       [ui[target], ui["mode_tabs"]], **wiring.QUIET)
    for (source, target), button in ui["copy_buttons"].items():
        button.click(_copy(source, target), ui[COPY_TARGETS[source]], [ui[COPY_TARGETS[target]], ui["mode_tabs"]],
                     **wiring.QUIET)


def _scale_preview(scale: float, *values: Any) -> str:
    size = next((s for s in (_size_of(v) for v in values) if s is not None), None)
    if size is None:
        return ""
    width, height = int(size[0] * scale), int(size[1] * scale)
    return f"<span class='resolution'>{size[0]}x{size[1]} → <b>{width}x{height}</b></span>"


def _size_of(value: Any) -> tuple[int, int] | None:
    """An uploaded image's size, from its header (nothing decoded)."""
    if not isinstance(value, str):
        return None
    try:
        with Image.open(value) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _run_mode(state: ServerState, uploads: UploadFolder, stopping: set[str], run_name: str, ui: dict[str, Any]):
    mode, names = RUNS[run_name]
    count, fields_end = len(names), len(names) + len(FIELD_NAMES)

    async def run(task_id: str, started: float, *values: Any):
        given = dict(zip(names, values[:count], strict=True))
        notes = ""
        try:
            fields = Fields.from_page(dict(zip(FIELD_NAMES, values[count:fields_end], strict=True)))
            script = scripts_ui.request_fields(ui, list(values[fields_end:]))
            if mode == Mode.BATCH:
                if script:
                    raise PageError("Batch: scripts are not run on folders here; choose Script: None")
                images, info, notes = await _batch(state, fields, given, task_id, stopping)
            else:
                inputs = ModeInputs(**given)
                try:
                    images, info = await actions.generate(state, mode, inputs, fields, task_id, script)
                finally:
                    await run_in_threadpool(uploads.remove, actions.editor_files(inputs))
        except PageError as e:
            return (gr.update(), gr.update(), gr.update(), wiring.error_html(actions.scrub(str(e))), *wiring.DONE)
        except Exception as e:  # noqa: BLE001 - an unexpected failure is a message too, and polling stops
            actions.log_unexpected(e)
            return (gr.update(), gr.update(), gr.update(), wiring.error_html("The job failed on the server (see its "
                                                                               "log)."), *wiring.DONE)
        text = actions.shown_infotext(images, info)
        return (images, actions.info_html(text, time.time() - started), info, notes, *wiring.DONE)

    return run


async def _batch(state: ServerState, fields: Fields, given: dict[str, Any], task_id: str,
                 stopping: set[str]) -> tuple[list, str, str]:
    uploaded = tuple(str(f) for f in given.get("batch_upload") or ())
    if "batch_upload" in given and not uploaded:
        raise PageError("Batch: no files uploaded")
    batch = BatchInputs(given.get("batch_input_dir") or "", given["batch_output_dir"] or "",
                        given["batch_mask_dir"] or "", bool(given["batch_use_png_info"]),
                        tuple(given["batch_png_info_props"] or ()), given["batch_png_info_dir"] or "", uploaded)
    try:
        images, info, warnings = await run_batch(state, BatchRoots(state.config.batch_roots), fields, batch, task_id,
                                                 lambda: task_id in stopping)
    finally:
        stopping.discard(task_id)
    return images, info, "".join(f"<div class='warning'>{actions.escape(w)}</div>" for w in warnings)


def _paste(state: ServerState):
    def paste(prompt: str):
        if not prompt or "Steps: " not in prompt:
            return [gr.update() for _ in FIELD_NAMES] + [gr.update()]
        values = actions.fields_from_infotext(prompt, state.loras.restore_names)
        updates = [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]
        return updates + [gr.update(visible=bool(values.get("variation")))]

    return paste


def _open(state: ServerState, path: str) -> Image.Image:
    """An uploaded (or shown) file as an image, its header checked first; a message on the page otherwise."""
    try:
        return actions.read_upload(path, state.config.max_pixels)
    except ValueError as e:
        raise refusal(actions.message_of(e)) from None


def editor_value(image: Any, plain: bool) -> Any:
    return image if plain else {"background": image, "layers": [], "composite": image}


def _send(state: ServerState, mode: Mode, plain_image: bool):
    def send(gallery: list | None, selected: int):
        if not gallery:
            raise refusal("No image to send: generate one first")
        item = gallery[max(0, min(int(selected or 0), len(gallery) - 1))]
        image = _open(state, item[0] if isinstance(item, tuple | list) else item)
        return editor_value(image, plain_image), gr.Tabs(selected=int(mode))

    return send


def send_across(state: ServerState, mode: Mode, plain_image: bool):
    """txt2img's "Send to img2img / inpaint": the picture into that sub-tab, and the img2img tab shown."""
    send = _send(state, mode, plain_image)

    def across(gallery: list | None, selected: int):
        return (*send(gallery, selected), gr.Tabs(selected="img2img"))

    return across


def _copy(source: Mode, target: Mode):
    def copy(value: Any):
        picture = value
        if isinstance(value, dict):  # an editor: what it shows (the painted mask is not copied)
            picture = value.get("background") if source == Mode.INPAINT else value.get("composite")
            picture = picture or value.get("background")
        if not picture:
            raise refusal("No image to copy: upload one first")
        return editor_value(picture, target == Mode.IMG2IMG), gr.Tabs(selected=int(target))

    return copy
