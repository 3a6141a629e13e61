"""The page: A1111's tabs (img2img, PNG Info, Settings) under its quicksettings, in Gradio, with A1111's element ids.

Every job goes through :mod:`retouch.ui.actions`, i.e. through the server's own validation and queue; what happens
only in the browser (Generate of the selected sub-tab, running state, shortcuts) is in :mod:`retouch.ui.assets`.
"""

from __future__ import annotations

import gradio as gr

from retouch.serving.state import ServerState
from retouch.ui import img2img_tab, networks, pnginfo, settings
from retouch.ui.uploads import UploadFolder


def build(state: ServerState, uploads: UploadFolder) -> gr.Blocks:
    with gr.Blocks(title="retouch", analytics_enabled=False) as page:
        quick = settings.quicksettings(state)
        with gr.Tabs(elem_id="tabs") as top_tabs:
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                ui = img2img_tab.build(state)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = pnginfo.build()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                options = settings.settings_tab(state)
        settings.wire_quicksettings(state, quick, page)
        settings.wire_settings(state, options)
        img2img_tab.wire(state, ui, uploads)
        networks.wire(ui, state, "img2img", settings.pick_checkpoint(state), quick["checkpoint"])
        pnginfo.wire(state, png, ui, top_tabs)
    return page
