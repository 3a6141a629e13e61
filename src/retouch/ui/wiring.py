"""What the parts every generation tab has do (see :mod:`retouch.ui.widgets`): token counters, styles, seed tools,
progress and the live preview, Interrupt / Skip, Save / Zip, the size swap. Handlers get and return plain values;
what they compute lives in :mod:`retouch.ui.actions`."""

from __future__ import annotations

import html
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr

from retouch.serving.state import ServerState
from retouch.styles import Style
from retouch.ui import actions
from retouch.ui.uploads import UploadFolder

logger = logging.getLogger(__name__)
QUIET: dict[str, Any] = {"show_progress": "hidden", "queue": False}  # events that are no job: no spinner, no queue


def wire_common(state: ServerState, ui: dict[str, Any], tab: str, uploads: UploadFolder,
                stopping: set[str]) -> None:
    """Connect a tab's common parts. ``stopping``: task ids whose Interrupt was clicked (a folder batch stops between
    its files)."""
    _token_counters(state, ui)
    input_accordion(ui, "refiner")
    _styles(state, ui)
    _seed_tools(ui)
    ui["swap_size"].click(lambda w, h: (h, w), [ui["width"], ui["height"]], [ui["width"], ui["height"]], **QUIET)
    ui["generate"].click(None, js=f"() => retouchGenerate('{tab}')")
    ui["timer"].tick(_progress(state), [ui["task"], ui["started"]], [ui["progress"], ui["live_preview"]],
                     concurrency_limit=None, show_progress="hidden")

    def interrupt(task: str | None) -> None:
        if task:
            stopping.add(task)
            state.backend.interrupt(task)

    ui["interrupt"].click(interrupt, ui["task"], None, **QUIET)
    ui["skip"].click(lambda: state.backend.skip(), None, None, **QUIET)
    ui["save"].click(_save(state, uploads, zipped=False), [ui["gallery"], ui["selected"]], ui["download"], **QUIET)
    ui["save_zip"].click(_save(state, uploads, zipped=True), [ui["gallery"], ui["selected"]], ui["download"], **QUIET)


def input_accordion(ui: dict[str, Any], name: str) -> None:
    """Opening an InputAccordion turns it on, closing it off, in the browser (A1111's behaviour)."""
    accordion = ui[f"{name}_accordion"]
    accordion.expand(None, None, ui[name], js="() => true", **QUIET)
    accordion.collapse(None, None, ui[name], js="() => false", **QUIET)


def start_outputs(ui: dict[str, Any]) -> list[Any]:
    return [ui["task"], ui["started"], ui["timer"], ui["message"], ui["info"]]


def start() -> tuple[str, float, gr.Timer, str, str]:
    """A job is starting: its task id, its start time, progress polling on, old messages gone."""
    return actions.new_task_id(), time.time(), gr.Timer(active=True), "", ""


def done_outputs(ui: dict[str, Any]) -> list[Any]:
    return [ui["timer"], ui["progress"], ui["live_preview"], ui["task"]]


DONE = (gr.Timer(active=False), "", None, None)


def refusal(message: str) -> gr.Error:
    """A message on the page for something the user can fix: one line in the server's log, no traceback."""
    logger.info("page: %s", message)
    return gr.Error(message, print_exception=False)


def error_html(text: str) -> str:
    return f"<div class='error' role='alert'>{html.escape(text)}</div>"


# ---------------------------------------------------------------------------------------------
def _token_counters(state: ServerState, ui: dict[str, Any]) -> None:
    def count(text: str, steps: int, styles: list[str] | None, negative: bool) -> str:
        chosen = state.styles.texts() if state.options.include_styles_into_token_counters else {}
        for name in styles or ():
            if name in chosen:
                text = actions.with_style(text, chosen[name][1 if negative else 0])
        try:
            tokens, target = state.backend.prompt_length(text or "", int(steps or 20), state.options, negative)
        except (ValueError, RuntimeError):
            return "<span>?/75</span>"
        over = " class='over'" if tokens > target else ""
        return f"<span{over}>{tokens}/{target}</span>"

    for box, counter, negative in ((ui["prompt"], ui["token_counter"], False),
                                   (ui["negative_prompt"], ui["negative_token_counter"], True)):
        inputs = [box, ui["steps"], ui["styles"]]
        for trigger in (box.change, ui["styles"].change):
            trigger(lambda text, steps, styles, n=negative: count(text, steps, styles, n), inputs, counter,
                    trigger_mode="always_last", **QUIET)


def _styles(state: ServerState, ui: dict[str, Any]) -> None:
    def names() -> list[str]:
        return list(state.styles.styles)

    def apply(prompt: str, negative: str, chosen: list[str] | None):
        styles = state.styles.texts()
        for name in chosen or ():
            if name in styles:
                prompt = actions.with_style(prompt, styles[name][0])
                negative = actions.with_style(negative, styles[name][1])
        return prompt, negative, gr.update(value=[])

    def select(name: str | None):
        style = state.styles.styles.get(name or "")
        return (style.prompt, style.negative_prompt) if style else (gr.update(), gr.update())

    def save(name: str | None, prompt: str, negative: str):
        try:
            state.styles.save(Style((name or "").strip(), prompt or "", negative or ""))
        except (ValueError, OSError) as e:
            return gr.update(), gr.update(), error_html(str(e))
        choices = names()
        return gr.update(choices=choices), gr.update(choices=choices), f"<p>Saved style {html.escape(name or '')}.</p>"

    def delete(name: str | None):
        try:
            state.styles.delete(name or "")
        except (ValueError, OSError) as e:
            return gr.update(), gr.update(), error_html(str(e))
        choices = names()
        return gr.update(choices=choices, value=None), gr.update(choices=choices), ""

    ui["styles_apply"].click(apply, [ui["prompt"], ui["negative_prompt"], ui["styles"]],
                             [ui["prompt"], ui["negative_prompt"], ui["styles"]], **QUIET)
    ui["style_name"].change(select, ui["style_name"], [ui["style_prompt"], ui["style_negative"]], **QUIET)
    ui["style_copy"].click(lambda p, n: (p, n), [ui["prompt"], ui["negative_prompt"]],
                           [ui["style_prompt"], ui["style_negative"]], **QUIET)
    edited = [ui["style_name"], ui["style_prompt"], ui["style_negative"]]
    ui["style_save"].click(save, edited, [ui["style_name"], ui["styles"], ui["style_message"]], **QUIET)
    ui["style_delete"].click(delete, ui["style_name"], [ui["style_name"], ui["styles"], ui["style_message"]],
                             **QUIET)


def _seed_tools(ui: dict[str, Any]) -> None:
    ui["variation"].change(lambda show: gr.update(visible=show), ui["variation"], ui["seed_extras"], **QUIET)
    ui["random_seed"].click(lambda: -1, None, ui["seed"], **QUIET)
    ui["reuse_seed"].click(_reuse_seed, [ui["generation_info"], ui["selected"]], ui["seed"], **QUIET)
    ui["gallery"].select(_selected, None, ui["selected"], **QUIET)


def _reuse_seed(info: str, selected: int) -> int | dict:
    if not info:
        return gr.update()
    data = json.loads(info)
    seeds = data.get("all_seeds") or [data.get("seed", -1)]
    index = max(0, min(int(selected or 0) - int(data.get("index_of_first_image", 0)), len(seeds) - 1))
    return int(seeds[index])


def _selected(evt: gr.SelectData) -> int:
    return int(evt.index)


def _progress(state: ServerState):
    def tick(task_id: str | None, started: float | None):
        return actions.progress_html(state, task_id, started), actions.preview_image(state, task_id)

    return tick


def _save(state: ServerState, uploads: UploadFolder, *, zipped: bool):
    """Save: the selected image (Zip: every image of the gallery) into ``<outdir>/saved`` on the server, and as a
    download (A1111's Save / Zip buttons)."""
    def save(gallery: list | None, selected: int):
        if not gallery:
            raise refusal("Nothing to save: generate something first")
        paths = [Path(item[0] if isinstance(item, tuple | list) else item) for item in gallery]
        chosen = paths if zipped else [paths[max(0, min(int(selected or 0), len(paths) - 1))]]
        chosen = [p for p in chosen if uploads.resolve(str(p)) is not None]
        if not chosen:
            raise refusal("The images are no longer on the server; generate them again")
        saved = actions.save_images(chosen, Path(state.config.outdir or "outputs/img2img-images") / "saved")
        if zipped:
            archive = Path(uploads.root) / f"images-{time.strftime('%Y%m%d-%H%M%S')}.zip"
            with zipfile.ZipFile(archive, "w") as z:
                for path in saved:
                    z.write(path, path.name)
            return gr.update(value=[str(archive)], visible=True)
        return gr.update(value=[str(p) for p in saved], visible=True)

    return save
