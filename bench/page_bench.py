"""The web page's cost over the API (issue 24's goal: a page job within 1.5× + 0.5 s of the same API job).

A real ``retouch serve`` with the page and Debian's Chromium (Playwright): the same 256², 4-step img2img job, and
an inpainting job with a painted mask, run from the page (click to infotext shown) and through the API (request
to response), alternately, ``runs`` times each.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _source(path: Path, size: int) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _page_job(page, editor: str | None) -> float:
    page.evaluate("""() => document.querySelectorAll('#html_info_img2img .infotext')
        .forEach((node) => { node.dataset.stale = '1'; })""")
    started = time.perf_counter()
    page.locator("#img2img_generate").click()
    page.wait_for_function("() => (document.querySelector('#html_info_img2img .infotext:not([data-stale])')"
                           "?.innerText || '').includes('Steps:')")
    return time.perf_counter() - started


def _fill(page, size: int) -> None:
    for elem_id, value in (("img2img_steps", 4), ("img2img_width", size), ("img2img_height", size),
                           ("img2img_seed", 1)):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Tab")
    page.locator("#img2img_prompt textarea").fill("a red cat")


def measure(runs: int = 5, size: int = 256) -> dict:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="page-bench-"))
    server = subprocess.Popen([sys.executable, "-m", "retouch", "serve", "--port", str(port), "--ckpt", "tiny",
                               "--outdir", str(tmp / "out")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url)
        src = _source(tmp / "src.png", size)
        encoded = base64.b64encode(src.read_bytes()).decode()
        api = {"init_images": [encoded], "prompt": "a red cat", "steps": 4, "width": size, "height": size, "seed": 1,
               "sampler_name": "DPM++ 2M", "save_images": True}
        mask = io.BytesIO()
        box = Image.new("L", (size, size), 0)
        box.paste(255, (size // 2 - 12, size // 2 - 12, size // 2 + 12, size // 2 + 12))
        box.save(mask, "PNG")
        inpaint_api = {**api, "mask": base64.b64encode(mask.getvalue()).decode(), "inpainting_fill": 1}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "chromium",
                                        args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(120_000)
            page.goto(url + "/")
            page.locator("#img2img_prompt textarea").wait_for()
            page.locator("#img2img_image input[type=file]").first.set_input_files(str(src))
            page.locator("#img2img_image img").first.wait_for()
            _fill(page, size)
            plain = _alternate(runs, lambda: _page_job(page, None), lambda: _api_job(url, api))
            page.locator("#img2img_inpaint_tab-button").click()
            _give_editor(page, "img2maskimg", src)
            canvas = page.locator("#img2maskimg canvas").first.bounding_box()
            x, y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            page.mouse.move(x - 12, y)
            page.mouse.down()
            page.mouse.move(x + 12, y, steps=8)
            page.mouse.up()
            painted = _alternate(runs, lambda: _page_job(page, "img2maskimg"), lambda: _api_job(url, inpaint_api))
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"size": size, "steps": 4, "runs": runs, "img2img": plain, "inpaint": painted}


def _give_editor(page, elem_id: str, path: Path) -> None:
    """An image editor sometimes misses the first file it is given while it is drawn: give it again, as a new file."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.locator(f"#{elem_id} canvas").first.wait_for(state="attached")
    for attempt in range(3):
        given = path if attempt == 0 else Path(shutil.copy(path, path.with_name(f"{path.stem}-{attempt}.png")))
        page.locator(f"#{elem_id} input[type=file]").first.set_input_files(str(given))
        try:
            page.locator(f"#{elem_id}").get_by_text("Upload an image").wait_for(state="detached", timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def _alternate(runs: int, page_job, api_job) -> dict:
    page_times, api_times = [], []
    page_job(), api_job()  # warm-up: the first job of each kind pays for caches
    for _ in range(runs):
        page_times.append(page_job())
        api_times.append(api_job())
    page_s, api_s = statistics.median(page_times), statistics.median(api_times)
    return {"page_s": page_times, "api_s": api_times, "page_median": page_s, "api_median": api_s,
            "ratio": page_s / api_s, "goal_s": 1.5 * api_s + 0.5, "met": page_s <= 1.5 * api_s + 0.5}


def _api_job(url: str, body: dict) -> float:
    started = time.perf_counter()
    r = requests.post(url + "/sdapi/v1/img2img", json=body, timeout=300)
    r.raise_for_status()
    return time.perf_counter() - started


def _wait(url: str) -> None:
    for _ in range(600):
        try:
            requests.get(url + "/internal/ping", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    import json

    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
