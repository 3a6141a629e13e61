"""A1111's extra-network pages beside a tab's Generation settings: Textual Inversion, Checkpoints and Lora, as cards
(``{tab}_textual_inversion``, ``{tab}_checkpoints``, ``{tab}_lora``). A card inserts its text into the prompt (a
second click takes it out again); a checkpoint card makes that checkpoint the server's. Each page has a search box
(filtered in the browser) and a Refresh button (the server rescans its folders)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

import gradio as gr

from retouch.serving.state import ServerState

PAGES = (("textual_inversion", "Textual Inversion"), ("checkpoints", "Checkpoints"), ("lora", "Lora"))


def cards(tab: str, entries: list[tuple[str, str, str]], *, checkpoint: bool = False) -> str:
    """The cards of one page; ``entries``: (name, what a click inserts, description)."""
    if not entries:
        return "<p class='extra-network-empty'>Nothing here: the server has no such files.</p>"
    items = []
    for name, text, description in entries:
        if checkpoint:
            action = f"retouchPickCheckpoint('{tab}', {json.dumps(text)})"
        else:
            action = f"retouchCard('{tab}', {json.dumps(text)}, false)"
        items.append(f"<div class='card' data-search='{html.escape(name.lower())}' onclick='{html.escape(action)}'>"
                     f"<div class='name'>{html.escape(name)}</div>"
                     f"<div class='description'>{html.escape(description)}</div></div>")
    return f"<div class='extra-network-cards'>{''.join(items)}</div>"


def entries(state: ServerState, page: str) -> list[tuple[str, str, str]]:
    """(name, inserted text, description) of every card of ``page``."""
    if page == "lora":
        folder = state.loras
        folder.refresh()
        weight = state.options.extra_networks_default_multiplier
        return [(f.name, f"<lora:{folder.preferred_name(f)}:{weight:g}>", f.sd_version) for f in folder.files]
    if page == "textual_inversion":
        loaded = state.backend.embeddings().get("loaded", {})
        return [(name, name, f"{data.get('vectors', '?')} vectors") for name, data in loaded.items()]
    return [(c.model_name, c.title, c.hash or "") for c in state.backend.checkpoints()]


def build(ui: dict[str, Any], state: ServerState, tab: str) -> None:
    """The three pages, as tabs (inside the caller's ``gr.Tabs``)."""
    for page, label in PAGES:
        with gr.Tab(label, elem_id=f"{tab}_{page}", elem_classes=["extra-network-page"]):
            with gr.Row():
                gr.HTML(f"<input class='extra-network-search' id='{tab}_{page}_extra_search' placeholder='Search…' "
                        "oninput='retouchFilterCards(this)'>")
                ui[f"{page}_refresh"] = gr.Button("Refresh", elem_id=f"{tab}_{page}_extra_refresh", size="sm",
                                                  scale=0, min_width=80)
            ui[f"{page}_cards"] = gr.HTML(lambda p=page: cards(tab, entries(state, p), checkpoint=p == "checkpoints"),
                                          elem_id=f"{tab}_{page}_cards")


def hidden(ui: dict[str, Any], tab: str) -> None:
    """What a checkpoint card sets (in the browser) and clicks: outside any tab row."""
    ui["pick_checkpoint"] = gr.Textbox(elem_id=f"{tab}_pick_checkpoint", elem_classes=["retouch-trigger"])
    ui["pick_checkpoint_button"] = gr.Button("pick", elem_id=f"{tab}_pick_checkpoint_button",
                                             elem_classes=["retouch-trigger"])


def wire(ui: dict[str, Any], state: ServerState, tab: str, picked: Callable[[str], Any], checkpoint: Any) -> None:
    """Refresh buttons; a checkpoint card: ``picked(title)`` sets the server's checkpoint and updates ``checkpoint``
    (the quicksettings dropdown)."""
    for page, _ in PAGES:
        def refresh(p: str = page) -> str:
            if p == "checkpoints":
                state.backend.refresh_checkpoints()
            elif p == "textual_inversion":
                state.backend.refresh_embeddings()
            return cards(tab, entries(state, p), checkpoint=p == "checkpoints")

        ui[f"{page}_refresh"].click(refresh, None, ui[f"{page}_cards"], show_progress="hidden")
    ui["pick_checkpoint_button"].click(picked, ui["pick_checkpoint"], checkpoint, show_progress="hidden")
