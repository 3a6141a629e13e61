"""The X/Y/Z plot's controls on the page, as A1111's (``scripts/xyz_grid.py`` ``ui()``): per axis a type
dropdown, a values text box and, for axes with a fixed set of values, a multi-select with a 📒 button that fills
in every choice; the swap buttons; "Use text inputs instead of dropdowns" switches every axis to its text box."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from retouch.sampling.registry import sampler_names, scheduler_labels
from retouch.scripts.xyz_axes import AXES, BOOL_CHOICES, csv_text, csv_values
from retouch.serving.state import ServerState
from retouch.ui import wiring

TITLE = "X/Y/Z plot"
FILL = "\U0001f4d2"


def axis_choices(state: ServerState) -> Callable[[int], list[str] | None]:
    """What each axis offers in its dropdown (None: a text box only), read when the axis is chosen."""
    def choices(index: int) -> list[str] | None:
        label = AXES[index].label
        if not AXES[index].choices:
            return None
        if label == "Sampler":
            return sampler_names()
        if label == "Schedule type":
            return scheduler_labels()
        if label in ("Checkpoint name", "Refiner checkpoint"):
            titles = sorted((c.title for c in state.backend.checkpoints()), key=str.casefold)
            return titles if label == "Checkpoint name" else ["None", *titles]
        if label == "VAE":
            return ["Automatic", "None", *state.backend.vaes()]
        if label == "Styles":
            return list(state.styles.styles)
        if label == "RNG source":
            return ["GPU", "CPU", "NV"]
        if label == "FP8 mode":
            return ["Disable", "Enable for SDXL", "Enable"]
        return list(reversed(BOOL_CHOICES))
    return choices


def controls() -> list[tuple[str, Any]]:
    """The plot's controls in A1111's ``script_args`` order (element ids: ``script_xyz_plot_<name>``)."""
    labels = [a.label for a in AXES]
    out: list[tuple[str, Any]] = []
    for axis, default in (("x", 1), ("y", 0), ("z", 0)):
        out += [
            (f"{axis}_type", lambda i, a=axis, d=default: gr.Dropdown(labels, value=labels[d], type="index",
                                                                      label=f"{a.upper()} type", elem_id=i)),
            (f"{axis}_values", lambda i, a=axis: gr.Textbox(label=f"{a.upper()} values", lines=1, elem_id=i)),
            (f"{axis}_values_dropdown", lambda i, a=axis: gr.Dropdown([], value=[], multiselect=True,
                                                                      label=f"{a.upper()} values", visible=False,
                                                                      allow_custom_value=True, elem_id=i)),
        ]
    out += [
        ("draw_legend", lambda i: gr.Checkbox(label="Draw legend", value=True, elem_id=i)),
        ("include_lone_images", lambda i: gr.Checkbox(label="Include Sub Images", value=False, elem_id=i)),
        ("include_sub_grids", lambda i: gr.Checkbox(label="Include Sub Grids", value=False, elem_id=i)),
        ("no_fixed_seeds", lambda i: gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=i)),
        ("vary_seeds_x", lambda i: gr.Checkbox(label="Vary seeds for X", value=False, elem_id=i)),
        ("vary_seeds_y", lambda i: gr.Checkbox(label="Vary seeds for Y", value=False, elem_id=i)),
        ("vary_seeds_z", lambda i: gr.Checkbox(label="Vary seeds for Z", value=False, elem_id=i)),
        ("margin_size", lambda i: gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)", elem_id=i)),
        ("csv_mode", lambda i: gr.Checkbox(label="Use text inputs instead of dropdowns", value=False, elem_id=i)),
    ]
    return out


def build_buttons(ui: dict[str, Any]) -> None:
    """The fill and swap buttons (A1111's element ids), inside the plot's group."""
    ui["xyz_fill"] = {a: gr.Button(FILL, visible=False, elem_id=f"xyz_grid_fill_{a}_tool_button", size="sm")
                      for a in "xyz"}
    with gr.Row():
        ui["xyz_swap"] = {pair: gr.Button(f"Swap {pair[0].upper()}/{pair[1].upper()} axes",
                                          elem_id=f"{pair[0]}{pair[1]}_grid_swap_axes_button")
                          for pair in ("xy", "yz", "xz")}


def wire(ui: dict[str, Any], state: ServerState) -> None:
    args = {name: component for title, name, component in ui["script_args"] if title == TITLE}
    choices = axis_choices(state)

    def select(index: int, text: str, chosen: list[str] | None, csv_mode: bool) -> tuple[Any, Any, Any]:
        """A1111's ``select_axis``: show the dropdown or the text box, carrying the values over."""
        offered = choices(index) if index is not None else None
        if offered is not None:
            if csv_mode and chosen:
                text, chosen = csv_text([c for c in chosen if c in offered]), []
            elif not csv_mode and text:
                chosen, text = [c for c in csv_values(text) if c in offered], ""
        return (gr.Button(visible=offered is not None), gr.Textbox(visible=offered is None or csv_mode, value=text),
                gr.Dropdown(choices=offered or [], visible=offered is not None and not csv_mode,
                            value=(chosen or []) if offered is not None else []))

    for a in "xyz":
        axis_io = [args[f"{a}_type"], args[f"{a}_values"], args[f"{a}_values_dropdown"], args["csv_mode"]]
        outputs = [ui["xyz_fill"][a], args[f"{a}_values"], args[f"{a}_values_dropdown"]]
        args[f"{a}_type"].change(select, axis_io, outputs, **wiring.QUIET)
        args["csv_mode"].change(select, axis_io, outputs, **wiring.QUIET)
        ui["xyz_fill"][a].click(lambda index, csv_mode: _fill(choices(index), csv_mode),
                                [args[f"{a}_type"], args["csv_mode"]],
                                [args[f"{a}_values"], args[f"{a}_values_dropdown"]], **wiring.QUIET)
    for pair, button in ui["xyz_swap"].items():
        io = [args[f"{a}_{part}"] for a in pair for part in ("type", "values", "values_dropdown")]
        button.click(lambda t1, v1, d1, t2, v2, d2: (t2, v2, d2, t1, v1, d1), io, io, **wiring.QUIET)


def _fill(offered: list[str] | None, csv_mode: bool) -> tuple[Any, Any]:
    if offered is None:
        return gr.Textbox(), gr.Dropdown()
    if csv_mode:
        return gr.Textbox(value=csv_text(offered)), gr.Dropdown()
    return gr.Textbox(), gr.Dropdown(choices=offered, value=offered)
