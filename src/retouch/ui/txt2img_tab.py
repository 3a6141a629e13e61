"""A1111's txt2img tab: the prompts, sampling, size, batch and seed controls every tab has, the Hires. fix and
Refiner accordions (A1111's element ids), extra-network cards, and the results column with "Send to img2img /
inpaint". Its jobs are ``POST /sdapi/v1/txt2img`` requests through the server's own validation and queue."""

from __future__ import annotations

import time
from dataclasses import fields as dataclass_fields
from typing import Any

import gradio as gr

from retouch.params.txt2img import LATENT_UPSCALE_MODES
from retouch.sampling.registry import SAMPLERS
from retouch.sampling.schedules import SCHEDULERS
from retouch.serving.state import ServerState
from retouch.ui import actions, networks, widgets, wiring
from retouch.ui.actions import PageError
from retouch.ui.txt2img_fields import (
    SAME_CHECKPOINT,
    SAME_SAMPLER,
    SAME_SCHEDULER,
    Txt2ImgFields,
    txt2img_fields_from_infotext,
)
from retouch.ui.uploads import UploadFolder
from retouch.upscalers import find_upscalers

FIELD_NAMES = [f.name for f in dataclass_fields(Txt2ImgFields)]


def hires_upscalers(state: ServerState) -> list[str]:
    """A1111's Upscaler dropdown: the latent modes, then the upscalers (without "None")."""
    found = find_upscalers(state.config.upscaler_folders(), state.options)
    return [*LATENT_UPSCALE_MODES, *(u.name for u in found if u.name != "None")]


def checkpoint_titles(state: ServerState) -> list[str]:
    return [c.title for c in state.backend.checkpoints()]


def build(state: ServerState) -> dict[str, Any]:
    ui: dict[str, Any] = {}
    widgets.toprow(ui, "txt2img", list(state.styles.styles))
    with gr.Row():
        with gr.Column(scale=1), gr.Tabs(elem_id="txt2img_extra_tabs"):
            with gr.Tab("Generation", elem_id="txt2img_generation_tab"):
                widgets.sampling(ui, "txt2img")
                with gr.Row(), gr.Column(scale=4):
                    widgets.size(ui, "txt2img", detect=False)
                widgets.batch_and_cfg(ui, "txt2img")
                widgets.seed(ui, "txt2img")
                _hires_fix(ui, state)
                widgets.refiner(ui, "txt2img", checkpoint_titles(state))
                widgets.script(ui, "txt2img", [])
            networks.build(ui, state, "txt2img")
        with gr.Column(scale=1):
            widgets.results(ui, "txt2img", [("img2img", "Send to img2img"), ("inpaint", "Send to inpaint")])
    networks.hidden(ui, "txt2img")
    ui["run"] = gr.Button("Generate (txt2img)", elem_id="txt2img_generate_run", elem_classes=["retouch-trigger"])
    return ui


def _hires_fix(ui: dict[str, Any], state: ServerState) -> None:
    """A1111's "Hires. fix" accordion (``txt2img_hr``: open = on) with its controls and defaults."""
    with widgets.input_accordion(ui, "enable_hr", "Hires. fix", "txt2img_hr"):
        with gr.Row(elem_id="txt2img_hires_fix_row1"):
            ui["hr_upscaler"] = gr.Dropdown(hires_upscalers(state), value="Latent", label="Upscaler",
                                            elem_id="txt2img_hr_upscaler")
            ui["hr_second_pass_steps"] = gr.Slider(0, 150, value=0, step=1, label="Hires steps",
                                                   elem_id="txt2img_hires_steps")
            ui["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.7, step=0.01, label="Denoising strength",
                                                 elem_id="txt2img_denoising_strength")
        with gr.Row(elem_id="txt2img_hires_fix_row2"):
            ui["hr_scale"] = gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by",
                                       elem_id="txt2img_hr_scale")
            ui["hr_resize_x"] = gr.Slider(0, 2048, value=0, step=8, label="Resize width to",
                                          elem_id="txt2img_hr_resize_x")
            ui["hr_resize_y"] = gr.Slider(0, 2048, value=0, step=8, label="Resize height to",
                                          elem_id="txt2img_hr_resize_y")
        ui["hr_final_resolution"] = gr.HTML(elem_id="txtimg_hr_finalres")
        with gr.Row(elem_id="txt2img_hires_fix_row3"):
            ui["hr_checkpoint_name"] = gr.Dropdown([SAME_CHECKPOINT, *checkpoint_titles(state)],
                                                   value=SAME_CHECKPOINT, label="Hires checkpoint",
                                                   elem_id="hr_checkpoint")
            ui["hr_sampler_name"] = gr.Dropdown([SAME_SAMPLER, *(s.name for s in SAMPLERS)], value=SAME_SAMPLER,
                                                label="Hires sampling method", elem_id="hr_sampler")
            ui["hr_scheduler"] = gr.Dropdown([SAME_SCHEDULER, *(s.label for s in SCHEDULERS)],
                                             value=SAME_SCHEDULER, label="Hires schedule type",
                                             elem_id="hr_scheduler")
        with gr.Row(elem_id="txt2img_hires_fix_row4"):
            ui["hr_prompt"] = gr.Textbox(label="Hires prompt", lines=2, elem_id="hires_prompt",
                                         placeholder="Prompt for hires fix pass. Leave empty to use the same prompt.")
            ui["hr_negative_prompt"] = gr.Textbox(label="Hires negative prompt", lines=2, elem_id="hires_neg_prompt",
                                                  placeholder="Negative prompt for hires fix pass. Leave empty to use "
                                                              "the same negative prompt.")


# ---------------------------------------------------------------------------------------------
# Behaviour
def wire(state: ServerState, ui: dict[str, Any], uploads: UploadFolder) -> None:
    stopping: set[str] = set()
    wiring.wire_common(state, ui, "txt2img", uploads, stopping)
    wiring.input_accordion(ui, "enable_hr")
    inputs = [ui["task"], ui["started"], *(ui[name] for name in FIELD_NAMES)]
    started = ui["run"].click(wiring.start, None, wiring.start_outputs(ui), concurrency_limit=None, queue=False,
                              show_progress="hidden")
    started.then(_run(state), inputs,
                 [ui["gallery"], ui["info"], ui["generation_info"], ui["message"], *wiring.done_outputs(ui)],
                 concurrency_limit=None, show_progress="hidden").then(None, js="() => retouchDone('txt2img')")
    resolution = [ui["width"], ui["height"], ui["hr_scale"], ui["hr_resize_x"], ui["hr_resize_y"], ui["enable_hr"]]
    for component in resolution:
        component.change(final_resolution, resolution, ui["hr_final_resolution"], **wiring.QUIET)
    ui["paste"].click(_paste(state), ui["prompt"], [*(ui[name] for name in FIELD_NAMES), ui["seed_extras"]],
                      **wiring.QUIET)


def final_resolution(width: int, height: int, scale: float, resize_x: int, resize_y: int, enabled: bool) -> str:
    """A1111's "from W×H to W'×H'" line under the hires controls."""
    if not enabled:
        return ""
    from retouch.params import Txt2ImgParams
    from retouch.params.txt2img import hires_target

    try:
        target = hires_target(Txt2ImgParams(width=int(width), height=int(height), hr_scale=float(scale),
                                            hr_resize_x=int(resize_x), hr_resize_y=int(resize_y), enable_hr=True))
    except (TypeError, ValueError, ZeroDivisionError):
        return ""
    return (f"<span class='resolution'>from <span class='resolution'>{int(width)}x{int(height)}</span> to "
            f"<span class='resolution'>{target.width}x{target.height}</span></span>")


def _run(state: ServerState):
    async def run(task_id: str, started: float, *values: Any):
        try:
            fields = Txt2ImgFields.from_page(dict(zip(FIELD_NAMES, values, strict=True)))
            outcome = await actions.run_request(state, fields.request(task_id), txt2img=True)
        except PageError as e:
            return (gr.update(), gr.update(), gr.update(), wiring.error_html(actions.scrub(str(e))), *wiring.DONE)
        except Exception as e:  # noqa: BLE001 - an unexpected failure is a message too, and polling stops
            actions.log_unexpected(e)
            return (gr.update(), gr.update(), gr.update(), wiring.error_html("The job failed on the server (see its "
                                                                               "log)."), *wiring.DONE)
        images = outcome.images
        text = actions.shown_infotext(images, outcome.info)
        return (images, actions.info_html(text, time.time() - started), outcome.info, "", *wiring.DONE)

    return run


def _paste(state: ServerState):
    def paste(prompt: str):
        if not prompt or "Steps: " not in prompt:
            return [gr.update() for _ in FIELD_NAMES] + [gr.update()]
        values = txt2img_fields_from_infotext(prompt, state.loras.restore_names)
        updates = [gr.update(value=values[name]) if name in values else gr.update() for name in FIELD_NAMES]
        return updates + [gr.update(visible=bool(values.get("variation")))]

    return paste
