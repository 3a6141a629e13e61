"""The parts every generation tab has, with A1111's element ids for the tab (``img2img_…``, ``txt2img_…``): the top
row (prompts, token counters, Generate / Interrupt / Skip, styles, paste), the sampling and seed controls, and the
results column (progress, live preview, gallery, infotext, Save / Zip, "Send to").

Each builder adds its components to the tab's dict ``ui`` under a plain name; :mod:`retouch.ui.wiring` connects
them.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from retouch.sampling.registry import SAMPLERS
from retouch.sampling.schedules import SCHEDULERS


def toprow(ui: dict[str, Any], tab: str, style_names: list[str]) -> None:
    with gr.Row(elem_id=f"{tab}_toprow"):
        with gr.Column(scale=6):
            ui["prompt"] = gr.Textbox(label="Prompt", elem_id=f"{tab}_prompt", lines=3,
                                      placeholder="Prompt (press Ctrl+Enter to generate, Esc to interrupt, "
                                                  "Ctrl+Up/Down to change emphasis)")
            ui["token_counter"] = gr.HTML("<span>0/75</span>", elem_id=f"{tab}_token_counter",
                                          elem_classes=["token-counter"])
            ui["negative_prompt"] = gr.Textbox(label="Negative prompt", elem_id=f"{tab}_neg_prompt", lines=2)
            ui["negative_token_counter"] = gr.HTML("<span>0/75</span>", elem_id=f"{tab}_negative_token_counter",
                                                   elem_classes=["token-counter"])
        with gr.Column(scale=1, min_width=200):
            ui["generate"] = gr.Button("Generate", variant="primary", elem_id=f"{tab}_generate",
                                       elem_classes=["retouch-generate"])
            with gr.Row():
                ui["interrupt"] = gr.Button("Interrupt", elem_id=f"{tab}_interrupt", size="sm",
                                            elem_classes=["retouch-stop"])
                ui["skip"] = gr.Button("Skip", elem_id=f"{tab}_skip", size="sm", elem_classes=["retouch-stop"])
            ui["paste"] = gr.Button("Read generation parameters", elem_id=f"{tab}_paste", size="sm")
            _styles(ui, tab, style_names)


def _styles(ui: dict[str, Any], tab: str, style_names: list[str]) -> None:
    with gr.Row(elem_id=f"{tab}_styles_row"):
        ui["styles"] = gr.Dropdown(style_names, value=[], multiselect=True, label="Styles", elem_id=f"{tab}_styles",
                                   scale=4)
        ui["styles_apply"] = gr.Button("Apply", elem_id=f"{tab}_style_apply", size="sm", scale=0, min_width=60)
    with gr.Accordion("Edit styles", open=False, elem_id=f"{tab}_styles_dialog"):
        ui["style_name"] = gr.Dropdown(style_names, value=None, allow_custom_value=True, label="Style",
                                       elem_id=f"{tab}_edit_style_name")
        ui["style_prompt"] = gr.Textbox(label="Prompt", lines=2, elem_id=f"{tab}_edit_style_prompt")
        ui["style_negative"] = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab}_edit_style_neg_prompt")
        with gr.Row():
            ui["style_copy"] = gr.Button("Copy from prompts", size="sm", elem_id=f"{tab}_edit_style_copy")
            ui["style_save"] = gr.Button("Save", size="sm", variant="primary", elem_id=f"{tab}_edit_style_save")
            ui["style_delete"] = gr.Button("Delete", size="sm", elem_id=f"{tab}_edit_style_delete")
        ui["style_message"] = gr.HTML(elem_id=f"{tab}_edit_style_message", elem_classes=["retouch-message"])


def sampling(ui: dict[str, Any], tab: str) -> None:
    with gr.Row():
        ui["sampler_name"] = gr.Dropdown([s.name for s in SAMPLERS], value="DPM++ 2M", label="Sampling method",
                                         elem_id=f"{tab}_sampling")
        ui["scheduler"] = gr.Dropdown([s.label for s in SCHEDULERS], value="Automatic", label="Schedule type",
                                      elem_id=f"{tab}_scheduler")
        ui["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{tab}_steps")


def size(ui: dict[str, Any], tab: str, *, detect: bool) -> None:
    """Width and height, the ⇅ swap and (img2img) the size of the source picture."""
    with gr.Row():
        ui["width"] = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=f"{tab}_width", scale=4)
        ui["height"] = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id=f"{tab}_height", scale=4)
        with gr.Column(scale=0, min_width=100):
            ui["swap_size"] = gr.Button("⇅ Swap", elem_id=f"{tab}_res_switch_btn", size="sm")
            if detect:
                ui["size_from_image"] = gr.Button("From image", elem_id=f"{tab}_detect_image_size_btn", size="sm")


def batch_and_cfg(ui: dict[str, Any], tab: str) -> None:
    with gr.Row():
        ui["batch_count"] = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{tab}_batch_count")
        ui["batch_size"] = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{tab}_batch_size")
    with gr.Row():
        ui["cfg_scale"] = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG Scale", elem_id=f"{tab}_cfg_scale")
        if tab == "img2img":
            ui["image_cfg_scale"] = gr.Slider(0, 3.0, value=1.5, step=0.05, label="Image CFG Scale",
                                              elem_id="img2img_image_cfg_scale")


def seed(ui: dict[str, Any], tab: str) -> None:
    with gr.Row(elem_id=f"{tab}_seed_row"):
        ui["seed"] = gr.Number(label="Seed", value=-1, precision=0, elem_id=f"{tab}_seed", scale=4)
        ui["random_seed"] = gr.Button("Random", elem_id=f"{tab}_random_seed", scale=0, min_width=70)
        ui["reuse_seed"] = gr.Button("Reuse", elem_id=f"{tab}_reuse_seed", scale=0, min_width=70)
        ui["variation"] = gr.Checkbox(label="Extra", elem_id=f"{tab}_subseed_show", scale=1)
    with gr.Row(visible=False, elem_id=f"{tab}_seed_extras") as ui["seed_extras"]:
        ui["subseed"] = gr.Number(label="Variation seed", value=-1, precision=0, elem_id=f"{tab}_subseed")
        ui["subseed_strength"] = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                           elem_id=f"{tab}_subseed_strength")
        ui["seed_resize_from_w"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from width",
                                             elem_id=f"{tab}_seed_resize_from_w")
        ui["seed_resize_from_h"] = gr.Slider(0, 2048, value=0, step=8, label="Resize seed from height",
                                             elem_id=f"{tab}_seed_resize_from_h")


def input_accordion(ui: dict[str, Any], name: str, label: str, elem_id: str) -> gr.Accordion:
    """A1111's InputAccordion: an accordion that is also a checkbox (open = on), ``ui[name]`` its value (wire it
    with :func:`retouch.ui.wiring.input_accordion`)."""
    accordion = gr.Accordion(label, open=False, elem_id=elem_id)
    ui[f"{name}_accordion"] = accordion
    with accordion:
        ui[name] = gr.Checkbox(label=label, value=False, elem_id=f"{elem_id}-checkbox")
    return accordion


def refiner(ui: dict[str, Any], tab: str, checkpoints: list[str]) -> None:
    """A1111's Refiner accordion (its always-on script): on, the checkpoint, where it takes over."""
    with input_accordion(ui, "refiner", "Refiner", f"script_{tab}_refiner_enable"), gr.Row():
        ui["refiner_checkpoint"] = gr.Dropdown(checkpoints, value=None, label="Checkpoint",
                                               elem_id=f"script_{tab}_refiner_checkpoint")
        ui["refiner_switch_at"] = gr.Slider(0.01, 1.0, value=0.8, step=0.01, label="Switch at",
                                            elem_id=f"script_{tab}_refiner_switch_at")


def script(ui: dict[str, Any], tab: str, titles: list[str]) -> None:
    ui["script"] = gr.Dropdown(["None", *titles], value="None", label="Script",
                               elem_id="script_list" if tab == "img2img" else f"{tab}_script_list")


def results(ui: dict[str, Any], tab: str, send_targets: list[tuple[str, str]]) -> None:
    """The results column; ``send_targets``: (component name, label) of the "Send to" buttons."""
    ui["progress"] = gr.HTML(elem_id=f"{tab}_progress", elem_classes=["retouch-quiet"])
    ui["live_preview"] = gr.Image(label="Live preview", elem_id=f"{tab}_live_preview", format="png",
                                  interactive=False, show_label=False,
                                  elem_classes=["retouch-live-preview", "retouch-quiet"])
    ui["gallery"] = gr.Gallery(label="Output", elem_id=f"{tab}_gallery", format="png", columns=2,
                               interactive=False, type="filepath", elem_classes=["retouch-gallery", "retouch-quiet"])
    with gr.Row():
        for name, label in send_targets:
            ui[f"send_{name}"] = gr.Button(label, elem_id=f"{tab}_send_to_{name}", size="sm")
    with gr.Row():
        ui["save"] = gr.Button("Save", elem_id=f"save_{tab}", size="sm")
        ui["save_zip"] = gr.Button("Zip", elem_id=f"save_zip_{tab}", size="sm")
    ui["download"] = gr.File(label="Download", file_count="multiple", interactive=False, visible=False,
                             elem_id=f"download_files_{tab}")
    ui["info"] = gr.HTML(elem_id=f"html_info_{tab}", elem_classes=["retouch-quiet"])
    ui["message"] = gr.HTML(elem_id=f"{tab}_message", elem_classes=["retouch-message", "retouch-quiet"])
    ui["task"] = gr.State(None)  # the page's current task id (progress, interrupt)
    ui["started"] = gr.State(None)
    ui["generation_info"] = gr.State("")  # A1111's info JSON of the last result
    ui["selected"] = gr.State(0)  # the gallery image "send to", "reuse seed" and "save" use
    ui["timer"] = gr.Timer(0.5, active=False)
