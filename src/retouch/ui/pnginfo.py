"""A1111's PNG Info tab: the parameters an image carries, and "Send to img2img / inpaint" with them."""

from __future__ import annotations

from typing import Any

import gradio as gr

from retouch.serving.state import ServerState
from retouch.ui import actions, img2img_tab
from retouch.ui.modes import Mode
from retouch.ui.wiring import refusal


def build() -> dict[str, Any]:
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


def wire(state: ServerState, png: dict[str, Any], ui: dict[str, Any], top_tabs: gr.Tabs) -> None:
    def read(path: str | None) -> tuple[str, str]:
        if not path:
            return "", ""
        try:
            image = actions.read_upload(path, state.config.max_pixels)
        except ValueError as e:
            return f"<div class='error'>{actions.escape(actions.message_of(e))}</div>", ""
        text = image.info.get("parameters", "")
        items = {str(k): v for k, v in image.info.items() if k != "parameters" and isinstance(v, str)}
        if not text and not items:
            return "<div class='infotext'><p>Nothing found in the image.</p></div>", ""
        extra = "".join(f"<p><b>{actions.escape(k)}</b><br>{actions.escape(v)}</p>" for k, v in items.items())
        return f"<div class='infotext'>{actions.info_html(text) if text else ''}{extra}</div>", text

    png["image"].change(read, png["image"], [png["html"], png["text"]], show_progress="hidden")
    fields = img2img_tab.field_components(ui)

    def send(mode: Mode):
        def to_tab(text: str, path: str | None):
            if not text:
                raise refusal("No generation parameters in this image")
            values = actions.fields_from_infotext(text, state.loras.restore_names)
            updates = [gr.update(value=values[name]) if name in values else gr.update()
                       for name in img2img_tab.FIELD_NAMES]
            image = actions.read_upload(path, state.config.max_pixels) if path else None
            return (*updates, gr.update(visible=bool(values.get("variation"))),
                    gr.update(value=img2img_tab.editor_value(image, mode == Mode.IMG2IMG)),
                    gr.Tabs(selected="img2img"), gr.Tabs(selected=int(mode)))

        return to_tab

    for name, mode, target in (("send_img2img", Mode.IMG2IMG, "image"), ("send_inpaint", Mode.INPAINT, "inpaint")):
        png[name].click(send(mode), [png["text"], png["image"]],
                        [*fields, ui["seed_extras"], ui[target], top_tabs, ui["mode_tabs"]], show_progress="hidden")
