"""The server's settings on the page: A1111's quicksettings (checkpoint, SD VAE) above every tab, and a Settings tab
with the options a user changes most. Both write the server's options, as ``POST /sdapi/v1/options`` does (the same
checks: a bad value is a message naming the option, and nothing is stored)."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from retouch.serving.models import AUTOMATIC_VAE, vae_settings
from retouch.serving.state import ServerState
from retouch.ui.wiring import refusal

# (option, label, component kind, its arguments): the settings A1111 users change most, by section
SETTINGS: tuple[tuple[str, tuple[tuple[str, str, str, dict[str, Any]], ...]], ...] = (
    ("Sampler parameters", (
        ("eta_ancestral", "Eta for k-diffusion samplers", "slider", {"minimum": 0, "maximum": 1, "step": 0.01}),
        ("eta_ddim", "Eta for DDIM", "slider", {"minimum": 0, "maximum": 1, "step": 0.01}),
        ("s_churn", "sigma churn", "slider", {"minimum": 0, "maximum": 100, "step": 0.01}),
        ("s_tmin", "sigma tmin", "slider", {"minimum": 0, "maximum": 10, "step": 0.01}),
        ("s_tmax", "sigma tmax (0 = infinity)", "slider", {"minimum": 0, "maximum": 999, "step": 0.01}),
        ("s_noise", "sigma noise", "slider", {"minimum": 0, "maximum": 1.1, "step": 0.001}),
        ("eta_noise_seed_delta", "Eta noise seed delta (ENSD)", "number", {"precision": 0}),
    )),
    ("Stable Diffusion", (
        ("CLIP_stop_at_last_layers", "Clip skip", "slider", {"minimum": 1, "maximum": 12, "step": 1}),
        ("randn_source", "Random number generator source", "radio", {"choices": ["GPU", "CPU", "NV"]}),
        ("img2img_color_correction", "Apply color correction to img2img results", "checkbox", {}),
    )),
    ("Optimizations", (
        ("token_merging_ratio", "Token merging ratio", "slider", {"minimum": 0, "maximum": 0.9, "step": 0.1}),
        ("token_merging_ratio_img2img", "Token merging ratio for img2img (only applies if non-zero and overrides "
         "above)", "slider", {"minimum": 0, "maximum": 0.9, "step": 0.1}),
        ("token_merging_ratio_hr", "Token merging ratio for high-res pass (only applies if non-zero and overrides "
         "above)", "slider", {"minimum": 0, "maximum": 0.9, "step": 0.1}),
    )),
    ("Saving images", (
        ("samples_save", "Always save all generated images", "checkbox", {}),
        ("samples_format", "File format for images", "dropdown", {"choices": ["png", "jpg", "jpeg", "webp"]}),
        ("grid_save", "Always save all generated image grids", "checkbox", {}),
        ("enable_pnginfo", "Save text information about generation parameters as chunks to png files", "checkbox",
         {}),
        ("save_images_before_color_correction", "Save a copy of image before applying color correction",
         "checkbox", {}),
    )),
    ("Live previews", (
        ("live_previews_enable", "Show live previews of the created image", "checkbox", {}),
        ("show_progress_every_n_steps", "Live preview display period (steps)", "slider",
         {"minimum": -1, "maximum": 32, "step": 1}),
    )),
)
NAMES = [name for _, section in SETTINGS for name, *_ in section]
KINDS = {"slider": gr.Slider, "number": gr.Number, "radio": gr.Radio, "checkbox": gr.Checkbox, "dropdown": gr.Dropdown}


def quicksettings(state: ServerState) -> dict[str, Any]:
    q: dict[str, Any] = {}
    with gr.Row(elem_id="quicksettings"):
        # choices and values are read at each page load (wire_quicksettings): the API (POST /sdapi/v1/options) may
        # have changed them, and a checkpoint's title carries its hash only once it is known
        q["checkpoint"] = gr.Dropdown(label="Stable Diffusion checkpoint", elem_id="setting_sd_model_checkpoint",
                                      choices=checkpoint_titles(state), interactive=True, scale=3)
        q["refresh"] = gr.Button("Refresh", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=80)
        q["vae"] = gr.Dropdown(label="SD VAE", elem_id="setting_sd_vae", choices=vae_settings(state.backend.vaes()),
                               interactive=True, scale=2)
        q["message"] = gr.HTML(elem_id="quicksettings_message", elem_classes=["retouch-message"])
    return q


def checkpoint_titles(state: ServerState) -> list[str]:
    """The checkpoints as A1111 lists them: ``file.safetensors [hash]``."""
    return [c.title for c in state.backend.checkpoints()]


def current_checkpoint(state: ServerState) -> str | None:
    """The title of the checkpoint jobs run on (found by name: ``--ckpt`` may name it by its path)."""
    default = state.backend.default_checkpoint()
    return next((c.title for c in state.backend.checkpoints() if state.backend.find_checkpoint(c.title) == default),
                None)


def current_vae(state: ServerState) -> str:
    setting = state.options.sd_vae
    return AUTOMATIC_VAE[0] if setting in AUTOMATIC_VAE else setting


def pick_checkpoint(state: ServerState):
    def pick(title: str | None) -> Any:
        if not title:
            return gr.update()
        try:
            state.backend.set_default_checkpoint(title)
        except ValueError as e:
            raise refusal(str(e)) from None
        return gr.update(value=current_checkpoint(state))

    return pick


def wire_quicksettings(state: ServerState, q: dict[str, Any], page: gr.Blocks) -> None:
    def pick_vae(name: str | None) -> str:
        if not name or name == current_vae(state):
            return ""
        try:
            state.options = state.options.with_settings({"sd_vae": state.backend.find_vae(name)})
        except ValueError as e:
            return f"<div class='error'>{html.escape(str(e))}</div>"
        return ""

    def shown() -> tuple[dict, dict]:
        return (gr.update(choices=checkpoint_titles(state), value=current_checkpoint(state)),
                gr.update(choices=vae_settings(state.backend.vaes()), value=current_vae(state)))

    def rescan() -> tuple[dict, dict]:
        state.backend.refresh_checkpoints()  # one scan finds both
        return shown()

    q["checkpoint"].input(pick_checkpoint(state), q["checkpoint"], q["checkpoint"], show_progress="hidden")
    q["vae"].input(pick_vae, q["vae"], q["message"], show_progress="hidden")
    q["refresh"].click(rescan, None, [q["checkpoint"], q["vae"]], show_progress="hidden")
    page.load(shown, None, [q["checkpoint"], q["vae"]], show_progress="hidden")


def settings_tab(state: ServerState) -> dict[str, Any]:
    s: dict[str, Any] = {"fields": {}}
    with gr.Row():
        s["submit"] = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=0)
        s["result"] = gr.HTML(elem_id="settings_result", elem_classes=["retouch-message"])
    for title, section in SETTINGS:
        with gr.Accordion(title, open=True):
            for name, label, kind, arguments in section:
                s["fields"][name] = KINDS[kind](label=label, elem_id=f"setting_{name}",
                                                value=lambda n=name: getattr(state.options, n), **arguments)
    return s


def wire_settings(state: ServerState, s: dict[str, Any]) -> None:
    def apply(*values: Any) -> str:
        current = {name: getattr(state.options, name) for name in NAMES}
        changes = {name: _like(current[name], value) for name, value in zip(NAMES, values, strict=True)
                   if value is not None and _like(current[name], value) != current[name]}
        if not changes:
            return "<p>Nothing changed.</p>"
        try:
            state.options = state.options.with_settings(changes)
        except ValueError as e:
            return f"<div class='error' role='alert'>{html.escape(str(e))}</div>"
        return f"<p>{len(changes)} settings changed: {html.escape(', '.join(changes))}.</p>"

    s["submit"].click(apply, [s["fields"][name] for name in NAMES], s["result"], show_progress="hidden")


def _like(current: Any, value: Any) -> Any:
    """A page value as the option's type (a slider gives 2.0 for an integer option)."""
    if isinstance(current, bool) or not isinstance(current, int | float):
        return value
    try:
        return type(current)(value) if float(value) == int(float(value)) or isinstance(current, float) else value
    except (TypeError, ValueError, OverflowError):
        return value
