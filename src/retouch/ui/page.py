"""The page: A1111's img2img tab (its sub-tabs, controls and element ids) and PNG Info tab, in Gradio.

Every job goes through :mod:`retouch.ui.actions`, i.e. through the server's own validation and queue.
"""

from __future__ import annotations

import time
from dataclasses import fields as dataclass_fields
from typing import Any

import gradio as gr
from PIL import Image
from starlette.concurrency import run_in_threadpool

from retouch.folder_batch import PNG_INFO_PROPS
from retouch.sampling.registry import SAMPLERS
from retouch.sampling.schedules import SCHEDULERS
from retouch.serving.errors import RequestError, scrub
from retouch.serving.models import AUTOMATIC_VAE, vae_settings
from retouch.serving.state import ServerState
from retouch.ui import actions
from retouch.ui.actions import INPAINT_AREAS, INPAINT_FILLS, MASK_MODES, RESIZE_MODES, Fields, PageError
from retouch.ui.batch import BatchInputs, BatchRoots, run_batch
from retouch.ui.modes import Mode, ModeInputs
from retouch.ui.uploads import UploadFolder

# Sub-tab ids, A1111's
TAB_IDS = {Mode.IMG2IMG: "img2img_img2img_tab", Mode.SKETCH: "img2img_img2img_sketch_tab",
           Mode.INPAINT: "img2img_inpaint_tab", Mode.INPAINT_SKETCH: "img2img_inpaint_sketch_tab",
           Mode.INPAINT_UPLOAD: "img2img_inpaint_upload_tab", Mode.BATCH: "img2img_batch_tab"}
FIELD_NAMES = [f.name for f in dataclass_fields(Fields)]
# Image inputs arrive as paths in the page's upload folder (checked by retouch.ui.guard): Gradio neither decodes
# nor converts them (that would happen on the event loop, before any size check); the handlers read them.
FILE: dict[str, Any] = {"type": "filepath", "image_mode": None, "format": "png"}


def build(state: ServerState, uploads: UploadFolder) -> gr.Blocks:
    with gr.Blocks(title="retouch", analytics_enabled=False) as page:
        with gr.Row(elem_id="quicksettings"):
            # values are read at each page load: the API (POST /sdapi/v1/options) may have changed them
            checkpoint = gr.Dropdown(label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                                     choices=_checkpoint_titles(state), value=lambda: _default_checkpoint(state),
                                     interactive=True, scale=3)
            refresh = gr.Button("Refresh", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=80)
            vae = gr.Dropdown(label="SD VAE", elem_id="setting_sd_vae", choices=vae_settings(state.backend.vaes()),
                              value=lambda: _current_vae(state), interactive=True, scale=2)
        with gr.Tabs(elem_id="tabs") as top_tabs:
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                ui = _img2img_tab(state)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = _png_info_tab()
        _wire_checkpoint(state, checkpoint, refresh, vae)
        _wire_img2img(state, ui, uploads)
        _wire_png_info(state, png, ui, top_tabs)
    return page


# ---------------------------------------------------------------------------------------------
# Layout
def _img2img_tab(state: ServerState) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    with gr.Row(elem_id="img2img_toprow"):
        with gr.Column(scale=6):
            ui["prompt"] = gr.Textbox(label="Prompt", elem_id="img2img_prompt", lines=3,
                                      placeholder="Prompt (press Ctrl+Enter to generate, Esc to interrupt)")
            ui["negative_prompt"] = gr.Textbox(label="Negative prompt", elem_id="img2img_neg_prompt", lines=2)
        with gr.Column(scale=1, min_width=180):
            ui["generate"] = gr.Button("Generate", variant="primary", elem_id="img2img_generate")
            with gr.Row():
                ui["interrupt"] = gr.Button("Interrupt", elem_id="img2img_interrupt", size="sm")
                ui["skip"] = gr.Button("Skip", elem_id="img2img_skip", size="sm")
            ui["paste"] = gr.Button("Read generation parameters", elem_id="img2img_paste", size="sm")
    with gr.Row():
        with gr.Column(scale=1):
            _mode_tabs(ui, bool(state.config.batch_roots))
            _resize_controls(ui)
            _sampling_controls(ui)
            _inpaint_controls(ui)
        with gr.Column(scale=1):
            ui["progress"] = gr.HTML(elem_id="img2img_progress")
            ui["live_preview"] = gr.Image(label="Live preview", elem_id="img2img_live_preview", format="png",
                                          interactive=False, visible=True, height=160)
            ui["gallery"] = gr.Gallery(label="Output", elem_id="img2img_gallery", format="png", columns=2,
                                       interactive=False, type="filepath")
            with gr.Row():
                ui["send_img2img"] = gr.Button("Send to img2img", elem_id="img2img_send_to_img2img", size="sm")
                ui["send_inpaint"] = gr.Button("Send to inpaint", elem_id="img2img_send_to_inpaint", size="sm")
                ui["send_sketch"] = gr.Button("Send to sketch", elem_id="img2img_send_to_sketch", size="sm")
            ui["info"] = gr.HTML(elem_id="html_info_img2img")
            ui["message"] = gr.HTML(elem_id="img2img_message")
    ui["task"] = gr.State(None)  # the page's current task id (progress, interrupt)
    ui["started"] = gr.State(None)
    ui["generation_info"] = gr.State("")  # A1111's info JSON of the last result
    ui["selected"] = gr.State(0)  # the gallery image "send to" and "reuse seed" use
    ui["timer"] = gr.Timer(0.5, active=False)
    return ui


def _batch_tab(ui: dict[str, Any], enabled: bool) -> None:
    if enabled:
        gr.Markdown("Process the images of a folder on the server (`Input directory`, below the folders this "
                    "server allows); results go to `Output directory`. With an `Inpaint batch mask directory`, its "
                    "one mask (or each image's same-named mask) is used.")
    else:
        gr.Markdown("Batch from folders is off on this server: it reads and writes server folders, so it is "
                    "enabled only by starting the server with `--batch-root DIR`.", elem_id="img2img_batch_off")
    ui["batch_input_dir"] = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir",
                                       interactive=enabled)
    ui["batch_output_dir"] = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir",
                                        interactive=enabled)
    ui["batch_mask_dir"] = gr.Textbox(label="Inpaint batch mask directory (required for inpaint batch processing "
                                      "only)", elem_id="img2img_batch_inpaint_mask_dir", interactive=enabled)
    ui["batch_use_png_info"] = gr.Checkbox(label="Append png info to prompts", elem_id="img2img_batch_use_png_info",
                                           interactive=enabled)
    ui["batch_png_info_props"] = gr.CheckboxGroup(list(PNG_INFO_PROPS), label="Parameters to take from png info",
                                                  elem_id="img2img_batch_png_info_props", interactive=enabled)


def _mode_tabs(ui: dict[str, Any], batch_enabled: bool) -> None:
    brush = gr.Brush(default_size=24, colors=["#ffffff"], color_mode="fixed")
    with gr.Tabs(elem_id="mode_img2img") as ui["mode_tabs"]:
        with gr.Tab("img2img", id=int(Mode.IMG2IMG), elem_id=TAB_IDS[Mode.IMG2IMG]) as tab0:
            ui["image"] = gr.Image(label="Image for img2img", elem_id="img2img_image", **FILE,
                                   sources=["upload", "clipboard"], height=420)
        with gr.Tab("Sketch", id=int(Mode.SKETCH), elem_id=TAB_IDS[Mode.SKETCH]) as tab1:
            ui["sketch"] = gr.ImageEditor(label="Image for img2img", elem_id="img2img_sketch", **FILE,
                                          sources=["upload", "clipboard"], brush=gr.Brush(default_size=12),
                                          height=420)
        with gr.Tab("Inpaint", id=int(Mode.INPAINT), elem_id=TAB_IDS[Mode.INPAINT]) as tab2:
            ui["inpaint"] = gr.ImageEditor(label="Image for inpainting with mask", elem_id="img2maskimg", **FILE,
                                           sources=["upload", "clipboard"], brush=brush, height=420)
        with gr.Tab("Inpaint sketch", id=int(Mode.INPAINT_SKETCH), elem_id=TAB_IDS[Mode.INPAINT_SKETCH]) as tab3:
            ui["inpaint_sketch"] = gr.ImageEditor(label="Color sketch inpainting", elem_id="inpaint_sketch", **FILE,
                                                  sources=["upload", "clipboard"], brush=gr.Brush(default_size=12),
                                                  height=420)
        with gr.Tab("Inpaint upload", id=int(Mode.INPAINT_UPLOAD), elem_id=TAB_IDS[Mode.INPAINT_UPLOAD]) as tab4:
            ui["upload_image"] = gr.Image(label="Image", elem_id="img_inpaint_base", **FILE, sources=["upload"])
            ui["upload_mask"] = gr.Image(label="Mask", elem_id="img_inpaint_mask", **FILE, sources=["upload"])
        with gr.Tab("Batch", id=int(Mode.BATCH), elem_id=TAB_IDS[Mode.BATCH]) as tab5:
            _batch_tab(ui, batch_enabled)
    # the selected sub-tab, held in the browser: set by the tab click itself, so a Generate right after a click
    # can never run the previous tab's mode (a server-side State is updated a round trip later)
    ui["mode"] = gr.Number(int(Mode.IMG2IMG), precision=0, visible=False, elem_id="img2img_selected_mode")
    ui["mode_tab_list"] = [tab0, tab1, tab2, tab3, tab4, tab5]


def _resize_controls(ui: dict[str, Any]) -> None:
    ui["resize_mode"] = gr.Radio(RESIZE_MODES, value=RESIZE_MODES[0], label="Resize mode", elem_id="resize_mode")
    with gr.Tabs(elem_id="img2img_tabs_resize") as ui["resize_tabs"]:
        with gr.Tab("Resize to", id="to", elem_id="img2img_tab_resize_to") as to_tab, gr.Row():
            ui["width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="img2img_width")
            ui["height"] = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id="img2img_height")
        with gr.Tab("Resize by", id="by", elem_id="img2img_tab_resize_by") as by_tab:
            ui["scale"] = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id="img2img_scale")
            ui["scale_preview"] = gr.HTML(elem_id="img2img_scale_resolution_preview")
    ui["resize_by"] = gr.State(False)
    ui["resize_tab_list"] = [to_tab, by_tab]


def _sampling_controls(ui: dict[str, Any]) -> None:
    with gr.Row():
        ui["sampler_name"] = gr.Dropdown([s.name for s in SAMPLERS], value="DPM++ 2M", label="Sampling method",
                                         elem_id="img2img_sampling")
        ui["scheduler"] = gr.Dropdown([s.label for s in SCHEDULERS], value="Automatic", label="Schedule type",
                                      elem_id="img2img_scheduler")
        ui["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="img2img_steps")
    with gr.Row():
        ui["batch_count"] = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id="img2img_batch_count")
        ui["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="img2img_batch_size")
    with gr.Row():
        ui["cfg_scale"] = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id="img2img_cfg_scale")
        ui["image_cfg_scale"] = gr.Slider(0, 3.0, value=1.5, step=0.05, label="Image CFG Scale",
                                          elem_id="img2img_image_cfg_scale")
    ui["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                         elem_id="img2img_denoising_strength")
    with gr.Row(elem_id="img2img_seed_row"):
        ui["seed"] = gr.Number(label="Seed", value=-1, precision=0, elem_id="img2img_seed", scale=4)
        ui["random_seed"] = gr.Button("Random", elem_id="img2img_random_seed", scale=0, min_width=70)
        ui["reuse_seed"] = gr.Button("Reuse", elem_id="img2img_reuse_seed", scale=0, min_width=70)
        ui["variation"] = gr.Checkbox(label="Extra", elem_id="img2img_subseed_show", scale=1)
    with gr.Row(visible=False, elem_id="img2img_seed_extras") as ui["seed_extras"]:
        ui["subseed"] = gr.Number(label="Variation seed", value=-1, precision=0, elem_id="img2img_subseed")
        ui["subseed_strength"] = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                           elem_id="img2img_subseed_strength")
        ui["seed_resize_from_w"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                                             elem_id="img2img_seed_resize_from_w")
        ui["seed_resize_from_h"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                                             elem_id="img2img_seed_resize_from_h")


def _inpaint_controls(ui: dict[str, Any]) -> None:
    with gr.Group(visible=False, elem_id="inpaint_controls") as ui["inpaint_controls"]:
        with gr.Row():
            ui["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
            ui["mask_alpha"] = gr.Slider(0, 100, value=0, step=1, label="Mask transparency",
                                         elem_id="img2img_mask_alpha", visible=False)
        ui["mask_mode"] = gr.Radio(MASK_MODES, value=MASK_MODES[0], label="Mask mode", elem_id="img2img_mask_mode")
        ui["inpainting_fill"] = gr.Radio(INPAINT_FILLS, value=INPAINT_FILLS[1], label="Masked content",
                                         elem_id="img2img_inpainting_fill")
        with gr.Row():
            ui["inpaint_area"] = gr.Radio(INPAINT_AREAS, value=INPAINT_AREAS[0], label="Inpaint area",
                                          elem_id="img2img_inpaint_full_res")
            ui["inpaint_full_res_padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                       elem_id="img2img_inpaint_full_res_padding")


def _png_info_tab() -> dict[str, Any]:
    png: dict[str, Any] = {}
    with gr.Row():
        png["image"] = gr.Image(label="Source", elem_id="pnginfo_image", type="filepath", sources=["upload"])
        with gr.Column():
            png["html"] = gr.HTML(elem_id="html_info_pnginfo")
            png["text"] = gr.Textbox(visible=False, elem_id="pnginfo_generation_info")
            with gr.Row():
                png["send_img2img"] = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")
                png["send_inpaint"] = gr.Button("Send to inpaint", elem_id="pnginfo_send_to_inpaint")
    return png


# ---------------------------------------------------------------------------------------------
# Behaviour
def _checkpoint_titles(state: ServerState) -> list[str]:
    return [c.model_name for c in state.backend.checkpoints()]


def _default_checkpoint(state: ServerState) -> str | None:
    name = state.backend.default_checkpoint()
    return next((c.model_name for c in state.backend.checkpoints() if name in (c.model_name, c.title)), None)


def _current_vae(state: ServerState) -> str:
    setting = state.options.sd_vae
    return AUTOMATIC_VAE[0] if setting in AUTOMATIC_VAE else setting


def _wire_checkpoint(state: ServerState, checkpoint: gr.Dropdown, refresh: gr.Button, vae: gr.Dropdown) -> None:
    """The quicksettings: the checkpoint and ``sd_vae`` every job without its own override uses (server-wide,
    as A1111's settings and ``POST /sdapi/v1/options``)."""
    def pick(name: str | None) -> None:
        if not name:
            return
        try:
            state.backend.set_default_checkpoint(name)
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def pick_vae(name: str | None) -> None:
        if not name or name == _current_vae(state):
            return
        try:
            state.options = state.options.with_overrides({"sd_vae": state.backend.find_vae(name)})
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def rescan() -> tuple[dict, dict]:
        state.backend.refresh_checkpoints()  # one scan finds both
        return (gr.update(choices=_checkpoint_titles(state), value=_default_checkpoint(state)),
                gr.update(choices=vae_settings(state.backend.vaes()), value=_current_vae(state)))

    checkpoint.change(pick, checkpoint, None)
    vae.change(pick_vae, vae, None)
    refresh.click(rescan, None, [checkpoint, vae])


def _field_components(ui: dict[str, Any]) -> list[Any]:
    return [ui[name] for name in FIELD_NAMES]


def _wire_img2img(state: ServerState, ui: dict[str, Any], uploads: UploadFolder) -> None:
    for mode, tab in enumerate(ui["mode_tab_list"]):
        tab.select(None, None, ui["mode"], js=f"() => {mode}", queue=False)
        tab.select(lambda m=mode: _mode_selected(m)[1:], None, [ui["inpaint_controls"], ui["mask_alpha"]])
    for by, tab in enumerate(ui["resize_tab_list"]):
        tab.select(lambda b=bool(by): b, None, ui["resize_by"])
    preview_inputs = [ui["scale"], ui["mode"], ui["image"], ui["sketch"], ui["inpaint"], ui["inpaint_sketch"],
                      ui["upload_image"]]
    for component in (ui["scale"], ui["image"], ui["upload_image"]):
        component.change(_scale_preview, preview_inputs, ui["scale_preview"])
    ui["variation"].change(lambda show: gr.update(visible=show), ui["variation"], ui["seed_extras"])
    ui["random_seed"].click(lambda: -1, None, ui["seed"])
    ui["reuse_seed"].click(_reuse_seed, [ui["generation_info"], ui["selected"]], ui["seed"])
    ui["gallery"].select(_selected, None, ui["selected"])
    inputs = [ui["mode"], ui["image"], ui["sketch"], ui["inpaint"], ui["inpaint_sketch"], ui["upload_image"],
              ui["upload_mask"], ui["batch_input_dir"], ui["batch_output_dir"], ui["batch_mask_dir"],
              ui["batch_use_png_info"], ui["batch_png_info_props"], *_field_components(ui)]
    started = ui["generate"].click(_start, None, [ui["task"], ui["started"], ui["timer"], ui["message"], ui["info"]],
                                   concurrency_limit=None, queue=False)
    stopping: set[str] = set()  # tasks whose Interrupt was clicked: a folder batch stops between its files
    started.then(_run_job(state, uploads, stopping), [ui["task"], ui["started"], *inputs],
                 [ui["gallery"], ui["info"], ui["generation_info"], ui["message"], ui["timer"], ui["progress"],
                  ui["live_preview"], ui["task"]],
                 concurrency_limit=None)
    ui["timer"].tick(_progress(state), [ui["task"], ui["started"]], [ui["progress"], ui["live_preview"]],
                     concurrency_limit=None, show_progress="hidden")
    def interrupt(task: str | None) -> None:
        if task:
            stopping.add(task)
        state.backend.interrupt(task)

    ui["interrupt"].click(interrupt, ui["task"], None, queue=False)
    ui["skip"].click(lambda: state.backend.skip(), None, None, queue=False)
    paste_outputs = [*_field_components(ui), ui["seed_extras"]]
    ui["paste"].click(_paste(state), ui["prompt"], paste_outputs)
    for name, mode, target in (("send_img2img", Mode.IMG2IMG, "image"), ("send_inpaint", Mode.INPAINT, "inpaint"),
                               ("send_sketch", Mode.SKETCH, "sketch")):
        ui[name].click(_send(state, mode, target == "image"), [ui["gallery"], ui["selected"]],
                       [ui[target], ui["mode_tabs"], ui["mode"], ui["inpaint_controls"], ui["mask_alpha"]])


def _mode_selected(mode: int) -> tuple[int, dict, dict]:
    inpainting = mode in (Mode.INPAINT, Mode.INPAINT_SKETCH, Mode.INPAINT_UPLOAD, Mode.BATCH)
    return mode, gr.update(visible=inpainting), gr.update(visible=mode == Mode.INPAINT_SKETCH)


def _scale_preview(scale: float, mode: int, *values: Any) -> str:
    image_value = {Mode.IMG2IMG: values[0], Mode.SKETCH: values[1], Mode.INPAINT: values[2],
                   Mode.INPAINT_SKETCH: values[3], Mode.INPAINT_UPLOAD: values[4]}.get(Mode(int(mode or 0)))
    if isinstance(image_value, dict):
        image_value = image_value.get("background")
    size = _size_of(image_value)
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


def _reuse_seed(info: str, selected: int) -> int | dict:
    import json

    if not info:
        return gr.update()
    data = json.loads(info)
    seeds = data.get("all_seeds") or [data.get("seed", -1)]
    index = max(0, min(int(selected or 0) - int(data.get("index_of_first_image", 0)), len(seeds) - 1))
    return int(seeds[index])


def _selected(evt: gr.SelectData) -> int:
    return int(evt.index)


def _start() -> tuple[str, float, gr.Timer, str, str]:
    return actions.new_task_id(), time.time(), gr.Timer(active=True), "", ""


def _run_job(state: ServerState, uploads: UploadFolder, stopping: set[str]):
    async def run(task_id: str, started: float, mode: int, image, sketch, inpaint, inpaint_sketch, upload_image,
                  upload_mask, batch_in, batch_out, batch_masks, batch_png, batch_props, *values: Any):
        fields = Fields(**dict(zip(FIELD_NAMES, values, strict=True)))
        done = (gr.Timer(active=False), "", None, None)
        notes = ""
        try:
            if Mode(int(mode or 0)) == Mode.BATCH:
                batch = BatchInputs(batch_in or "", batch_out or "", batch_masks or "", bool(batch_png),
                                    tuple(batch_props or ()))
                try:
                    images, info, warnings = await run_batch(state, BatchRoots(state.config.batch_roots), fields,
                                                             batch, task_id, lambda: task_id in stopping)
                finally:
                    stopping.discard(task_id)
                notes = "".join(f"<div class='warning'>{_escape(w)}</div>" for w in warnings)
            else:
                inputs = ModeInputs(image, sketch, inpaint, inpaint_sketch, upload_image, upload_mask)
                try:
                    images, info = await actions.generate(state, Mode(int(mode or 0)), inputs, fields, task_id)
                finally:
                    await run_in_threadpool(uploads.remove, actions.editor_files(inputs))
        except PageError as e:
            message = f"<div class='error' role='alert'>{_escape(scrub(str(e)))}</div>"
            return (gr.update(), gr.update(), gr.update(), message, *done)
        text = images[0].info.get("parameters", "") if images else ""
        return (images, actions.info_html(text, time.time() - started), info, notes, *done)

    return run


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _progress(state: ServerState):
    def tick(task_id: str | None, started: float | None):
        return actions.progress_html(state, task_id, started), actions.preview_image(state, task_id)

    return tick


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
    except (RequestError, ValueError) as e:
        raise gr.Error(e.detail if isinstance(e, RequestError) else str(e)) from None


def _send(state: ServerState, mode: Mode, plain_image: bool):
    def send(gallery: list | None, selected: int):
        if not gallery:
            raise gr.Error("No image to send: generate one first")
        item = gallery[max(0, min(int(selected or 0), len(gallery) - 1))]
        image = _open(state, item[0] if isinstance(item, tuple | list) else item)
        value: Any = image if plain_image else {"background": image, "layers": [], "composite": image}
        return (value, gr.Tabs(selected=int(mode)), int(mode), *_mode_selected(int(mode))[1:])

    return send


def _wire_png_info(state: ServerState, png: dict[str, Any], ui: dict[str, Any], top_tabs: gr.Tabs) -> None:
    def read(path: str | None) -> tuple[str, str]:
        if not path:
            return "", ""
        image = _open(state, path)
        text = image.info.get("parameters", "")
        items = {str(k): v for k, v in image.info.items() if k != "parameters" and isinstance(v, str)}
        if not text and not items:
            return "<div class='infotext'><p>Nothing found in the image.</p></div>", ""
        extra = "".join(f"<p><b>{_escape(k)}</b><br>{_escape(v)}</p>" for k, v in items.items())
        return f"<div class='infotext'>{actions.info_html(text) if text else ''}{extra}</div>", text

    png["image"].change(read, png["image"], [png["html"], png["text"]])

    def send(mode: Mode):
        def to_tab(text: str, path: str | None):
            if not text:
                raise gr.Error("No generation parameters in this image")
            values = actions.fields_from_infotext(text, state.loras.restore_names)
            updates = [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]
            image = _open(state, path) if path else None
            target: Any = image if mode == Mode.IMG2IMG else {"background": image, "layers": [], "composite": image}
            return (*updates, gr.update(visible=bool(values.get("variation"))), gr.update(value=target),
                    gr.Tabs(selected="img2img"), gr.Tabs(selected=int(mode)), int(mode), *_mode_selected(int(mode))[1:])

        return to_tab

    for name, mode, target in (("send_img2img", Mode.IMG2IMG, "image"), ("send_inpaint", Mode.INPAINT, "inpaint")):
        png[name].click(send(mode), [png["text"], png["image"]],
                        [*_field_components(ui), ui["seed_extras"], ui[target], top_tabs, ui["mode_tabs"], ui["mode"],
                         ui["inpaint_controls"], ui["mask_alpha"]])

