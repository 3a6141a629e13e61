"""A real ``retouch serve`` with the page, and Debian's Chromium driven by Playwright (headless)."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.api.conftest import start
from tests.conftest import REPO

SHOTS = REPO / "docs" / "ui"
FAILURES = REPO / "docs" / "ui" / "failures"


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is missing: apt-get install -y chromium (.ci/run installs it)")


def write_separate_vae(folder: Path) -> Path:
    """The bundled tiny model's VAE as a separate file (A1111's layout: LDM keys without their prefix), its last
    bias shifted so that it decodes visibly differently."""
    from safetensors.torch import load_file, save_file

    from retouch.models.tiny import ensure_tiny_checkpoint

    state = {k.removeprefix("first_stage_model."): v for k, v in load_file(ensure_tiny_checkpoint(folder)).items()
             if k.startswith("first_stage_model.")}
    state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"] + 0.3
    path = folder / "vaes" / "other.safetensors"
    path.parent.mkdir()
    save_file(state, path)
    return path


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory):
    """``retouch serve --webui`` on the bundled tiny models, with one separate VAE (``other.safetensors``) and a
    folder the Batch sub-tab may use (``batch_root``)."""
    vae = write_separate_vae(tmp_path_factory.mktemp("vae"))
    batch_root = tmp_path_factory.mktemp("batch-root")
    s = start(tmp_path_factory, "--webui", "--ckpt", "tiny", "--vae-dir", str(vae.parent),
              "--outdir", str(tmp_path_factory.mktemp("ui-out")), "--batch-root", str(batch_root))
    s.batch_root = batch_root
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser, ui_server, request):
    """A fresh tab on the page, with every request it makes recorded (``page.hosts``)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    tab = context.new_page()
    tab.set_default_timeout(120_000)  # a loaded 2-core machine: wait on state, generously
    hosts: set[str] = set()
    tab.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    tab.hosts = hosts
    tab.goto(ui_server.url + "/", wait_until="domcontentloaded")
    tab.locator("#img2img_prompt textarea").wait_for()
    tab.locator("#img2img_denoising_strength input[type=number]").wait_for()  # the page is rendered in parts
    yield tab
    if getattr(request.node, "failed", False):
        FAILURES.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(FAILURES / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed = True


def source_png(path: Path, w: int = 64, h: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1) + rng.normal(0, 12, (h, w, 3))
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path)
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def gallery_images(page, server) -> list[Image.Image]:
    """The gallery's images, fetched from the page's own URLs (PNG: the exact pixels)."""
    out = []
    for img in page.locator("#img2img_gallery img").all():
        src = img.get_attribute("src")
        data = requests.get(src if src.startswith("http") else server.url + src, timeout=60).content
        out.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return out


def pixels(image: Image.Image) -> np.ndarray:
    return np.array(image.convert("RGB")).astype(int)
