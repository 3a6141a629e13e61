"""The page: A1111's tabs (txt2img, img2img, PNG Info, Settings) under its quicksettings, in Gradio, with A1111's
element ids.

Every job goes through :mod:`retouch.ui.actions`, i.e. through the server's own validation and queue; what happens
only in the browser (Generate of the selected sub-tab, running state, shortcuts) is in :mod:`retouch.ui.assets`.
"""

from __future__ import annotations

import gradio as gr

from retouch.serving.state import ServerState
from retouch.ui import img2img_tab, networks, pnginfo, settings, txt2img_tab, wiring
from retouch.ui.modes import Mode
from retouch.ui.uploads import UploadFolder


def build(state: ServerState, uploads: UploadFolder) -> gr.Blocks:
    with gr.Blocks(title="retouch", analytics_enabled=False) as page:
        quick = settings.quicksettings(state)
        with gr.Tabs(elem_id="tabs", selected="img2img") as top_tabs:  # in A1111's order; img2img open first
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                txt = txt2img_tab.build(state)
            with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                ui = img2img_tab.build(state)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                png = pnginfo.build()
            with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                options = settings.settings_tab(state)
        settings.wire_quicksettings(state, quick, page)
        settings.wire_settings(state, options)
        img2img_tab.wire(state, ui, uploads)
        txt2img_tab.wire(state, txt, uploads)
        for tab in (ui, txt):
            networks.wire(tab, state, "img2img" if tab is ui else "txt2img", settings.pick_checkpoint(state),
                          quick["checkpoint"])
        for name, mode, target in (("send_img2img", Mode.IMG2IMG, "image"), ("send_inpaint", Mode.INPAINT, "inpaint")):
            txt[name].click(img2img_tab.send_across(state, mode, target == "image"), [txt["gallery"], txt["selected"]],
                            [ui[target], ui["mode_tabs"], top_tabs], **wiring.QUIET)
        pnginfo.wire(state, png, ui, top_tabs)
    return page
