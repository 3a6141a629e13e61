"""The img2img tab's Script dropdown (``script_list``) and each script's controls under it, with A1111's element
ids (``script_<title>_<argument>``); a page job with a script is the API's ``script_name`` + ``script_args``."""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from retouch.scripts import img2img_scripts
from retouch.scripts.loopback import CURVES
from retouch.scripts.poor_mans_outpainting import DIRECTIONS, FILLS
from retouch.serving.state import ServerState
from retouch.ui import wiring, xyz_ui
from retouch.upscalers import find_upscalers


def _slug(title: str) -> str:
    """A1111's ``Script.elem_id`` for an img2img-only script: ``script_<title lower, spaces → _, others dropped>``."""
    return "script_" + re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", title.lower()))


def _controls(state: ServerState) -> dict[str, list[tuple[str, Any]]]:
    """Each script's controls, in A1111's ``ui()`` order (its ``script_args``); None: an argument with no control."""
    upscalers = [u.name for u in find_upscalers(state.config.upscaler_folders(), state.options)]
    controls: dict[str, list[tuple[str, Any]]] = {
        "SD upscale": [
            ("info", None),
            ("overlap", lambda i: gr.Slider(0, 256, value=64, step=16, label="Tile overlap", elem_id=i)),
            ("upscaler_index", lambda i: gr.Radio(upscalers, value=upscalers[0], type="index", label="Upscaler",
                                                  elem_id=i)),
            ("scale_factor", lambda i: gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Scale Factor", elem_id=i))],
        "Loopback": [
            ("loops", lambda i: gr.Slider(1, 32, value=4, step=1, label="Loops", elem_id=i)),
            ("final_denoising_strength", lambda i: gr.Slider(0, 1, value=0.5, step=0.01,
                                                             label="Final denoising strength", elem_id=i)),
            ("denoising_curve", lambda i: gr.Dropdown(list(CURVES), value="Linear",
                                                      label="Denoising strength curve", elem_id=i)),
            ("append_interrogation", lambda i: gr.Dropdown(["None"], value="None", label="Append interrogated prompt "
                                                           "at each iteration", elem_id=i))],
        "Outpainting mk2": [
            ("info", None),
            ("pixels", lambda i: gr.Slider(8, 256, value=128, step=8, label="Pixels to expand", elem_id=i)),
            ("mask_blur", lambda i: gr.Slider(0, 64, value=8, step=1, label="Mask blur", elem_id=i)),
            ("direction", lambda i: gr.CheckboxGroup(list(DIRECTIONS), value=list(DIRECTIONS),
                                                     label="Outpainting direction", elem_id=i)),
            ("noise_q", lambda i: gr.Slider(0.0, 4.0, value=1.0, step=0.01,
                                            label="Fall-off exponent (lower=higher detail)", elem_id=i)),
            ("color_variation", lambda i: gr.Slider(0.0, 1.0, value=0.05, step=0.01, label="Color variation",
                                                    elem_id=i))],
        "Poor man's outpainting": [
            ("pixels", lambda i: gr.Slider(8, 256, value=128, step=8, label="Pixels to expand", elem_id=i)),
            ("mask_blur", lambda i: gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id=i)),
            ("inpainting_fill", lambda i: gr.Radio(list(FILLS), value="fill", type="index", label="Masked content",
                                                   elem_id=i)),
            ("direction", lambda i: gr.CheckboxGroup(list(DIRECTIONS), value=list(DIRECTIONS),
                                                     label="Outpainting direction", elem_id=i))],
        "Prompts from file or textbox": [
            ("checkbox_iterate", lambda i: gr.Checkbox(label="Iterate seed every line", value=False, elem_id=i)),
            ("checkbox_iterate_batch", lambda i: gr.Checkbox(label="Use same random seed for all lines", value=False,
                                                             elem_id=i)),
            ("prompt_position", lambda i: gr.Radio(["start", "end"], value="start", label="Insert prompts at the",
                                                   elem_id=i)),
            ("prompt_txt", lambda i: gr.Textbox(label="List of prompt inputs", lines=4, elem_id=i))],
        "Prompt matrix": [
            ("put_at_start", lambda i: gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                                   elem_id=i)),
            ("different_seeds", lambda i: gr.Checkbox(label="Use different seed for each picture", value=False,
                                                      elem_id=i)),
            ("prompt_type", lambda i: gr.Radio(["positive", "negative"], value="positive", label="Select prompt",
                                               elem_id=i)),
            ("variations_delimiter", lambda i: gr.Radio(["comma", "space"], value="comma",
                                                        label="Select joining char", elem_id=i)),
            ("margin_size", lambda i: gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)", elem_id=i))],
        xyz_ui.TITLE: xyz_ui.controls(),
    }
    return {s.title: controls[s.title] for s in img2img_scripts().values()}  # in A1111's order (by file name)


def build(ui: dict[str, Any], state: ServerState) -> None:
    """The dropdown and, under it, one group of controls per script (shown when it is chosen)."""
    controls = _controls(state)
    ui["script"] = gr.Dropdown(["None", *controls], value="None", label="Script", elem_id="script_list")
    ui["script_groups"], ui["script_args"] = {}, []
    for title, args in controls.items():
        with gr.Group(visible=False, elem_id=_slug(title)) as group:
            for name, make in args:
                component = make(f"{_slug(title)}_{name}") if make is not None else None
                if component is not None:
                    ui["script_args"].append((title, name, component))
            if title == xyz_ui.TITLE:
                xyz_ui.build_buttons(ui)
        ui["script_groups"][title] = group
    ui["script_layout"] = {title: [name for name, _ in args] for title, args in controls.items()}


def wire(ui: dict[str, Any], state: ServerState) -> None:
    xyz_ui.wire(ui, state)
    titles = list(ui["script_groups"])
    ui["script"].change(lambda chosen: [gr.Group(visible=chosen == t) for t in titles], ui["script"],
                        [ui["script_groups"][t] for t in titles], **wiring.QUIET)


def components(ui: dict[str, Any]) -> list[Any]:
    """What a Generate sends for the scripts: the dropdown, then every script's controls."""
    return [ui["script"], *(component for _, _, component in ui["script_args"])]


def request_fields(ui: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    """``script_name`` / ``script_args`` of the chosen script (nothing for None), from :func:`components`' values."""
    chosen, rest = values[0], values[1:]
    if not chosen or chosen == "None":
        return {}
    given = {(title, name): value for (title, name, _), value in zip(ui["script_args"], rest, strict=True)}
    args = [given.get((chosen, name)) for name in ui["script_layout"][chosen]]
    return {"script_name": chosen, "script_args": args}
