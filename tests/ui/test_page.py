"""The web page in a real (headless) Chromium: A1111's ids, every sub-tab, the same pixels as the API."""

from __future__ import annotations

import base64
import io
import shutil
import threading

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.ui.conftest import SHOTS, b64, gallery_images, pixels, source_png

A1111_IDS = ["img2img_prompt", "img2img_neg_prompt", "img2img_generate", "img2img_interrupt", "img2img_skip",
             "img2img_steps", "img2img_sampling", "img2img_scheduler", "img2img_width", "img2img_height",
             "img2img_cfg_scale", "img2img_image_cfg_scale", "img2img_denoising_strength", "img2img_seed",
             "img2img_batch_count", "img2img_batch_size", "img2img_gallery", "html_info_img2img"]
SUB_TABS = {  # sub-tab button → the ids that appear in it (Gradio renders a tab's contents once it is opened)
    "img2img_img2img_tab": ["img2img_image"],
    "img2img_img2img_sketch_tab": ["img2img_sketch"],
    "img2img_inpaint_tab": ["img2maskimg", "img2img_mask_blur", "img2img_mask_mode", "img2img_inpainting_fill",
                            "img2img_inpaint_full_res", "img2img_inpaint_full_res_padding"],
    "img2img_inpaint_sketch_tab": ["inpaint_sketch", "img2img_mask_alpha"],
    "img2img_inpaint_upload_tab": ["img_inpaint_base", "img_inpaint_mask"],
    "img2img_batch_tab": ["img2img_batch_input_dir", "img2img_batch_output_dir", "img2img_batch_inpaint_mask_dir"],
}


EDITORS = {"img2img_sketch", "img2maskimg", "inpaint_sketch"}  # Gradio image editors (a canvas)


def set_value(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]") if page.locator(f"#{elem_id} input[type=number]").count() \
        else page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(str(value))
    box.press("Tab")


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f"ul[role=listbox] li[data-value='{option}'], ul[role=listbox] li:text-is('{option}')").first.click()


def open_tab(page, tab_id: str) -> None:
    page.locator(f"#{tab_id}-button").click()
    page.locator(f"#{tab_id}").wait_for(state="visible")


def common(page, prompt="a red cat", steps=4, size=64, seed=5) -> None:
    page.locator("#img2img_prompt textarea").fill(prompt)
    set_value(page, "img2img_steps", steps)
    set_value(page, "img2img_width", size)
    set_value(page, "img2img_height", size)
    set_value(page, "img2img_seed", seed)


def generate(page, expect_error: bool = False) -> str:
    """Click Generate; wait until this job's infotext (or error message) is shown; return the infotext.
    What an earlier job left is marked stale first: the page clears it only once the click reaches the server,
    and waiting on it would read the last job's outcome."""
    page.evaluate("""() => document.querySelectorAll('#html_info_img2img .infotext, #img2img_message .error')
        .forEach(node => { node.dataset.stale = '1'; })""")
    page.locator("#img2img_generate").click()
    page.wait_for_function("""() => {
        const info = document.querySelector('#html_info_img2img .infotext:not([data-stale])')?.innerText || '';
        return info.includes('Steps:') || document.querySelector('#img2img_message .error:not([data-stale])'); }""")
    error = page.locator("#img2img_message .error")
    if error.count():
        assert expect_error, error.inner_text()
        return ""
    assert not expect_error, "the job ran"
    return page.locator("#html_info_img2img .infotext").inner_text()


def upload(page, elem_id: str, path) -> None:
    """Put a file into an image component or image editor and wait until it shows it."""
    component = page.locator(f"#{elem_id}")
    component.wait_for()
    if elem_id not in EDITORS:
        component.locator("input[type=file]").first.set_input_files(str(path))
        component.locator("img").first.wait_for()
        return
    component.locator("canvas").first.wait_for(state="attached")  # the editor has drawn its (empty) canvas
    for attempt in range(3):  # an image editor: its upload prompt goes once the image is in
        given = path if attempt == 0 else shutil.copy(path, path.with_name(f"{path.stem}-{attempt}{path.suffix}"))
        component.locator("input[type=file]").first.set_input_files(str(given))
        try:  # a freshly shown editor can miss a file given before it is ready: give it again (a new file:
            # setting the same one twice fires no change event)
            component.get_by_text("Upload an image").wait_for(state="detached", timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def api_request(size=64, steps=4, seed=5, prompt="a red cat", **extra) -> dict:
    return {"prompt": prompt, "negative_prompt": "", "steps": steps, "width": size, "height": size, "seed": seed,
            "sampler_name": "DPM++ 2M", "scheduler": "Automatic", "cfg_scale": 7.0, "denoising_strength": 0.75,
            "n_iter": 1, "batch_size": 1, "resize_mode": 0, "subseed": -1, "subseed_strength": 0, **extra}


def api_image(server, request: dict) -> Image.Image:
    r = server.post("/sdapi/v1/img2img", json=request)
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB")


def drag(page, elem_id: str, dx: float = 12) -> None:
    """A short horizontal brush stroke through the middle of an image editor's canvas."""
    box = page.locator(f"#{elem_id} canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - dx, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=8)
    page.mouse.up()


def test_page_has_a1111_ids_every_sub_tab_and_loads_nothing_from_elsewhere(page, ui_server):
    for i in A1111_IDS:
        page.locator(f"#{i}").first.wait_for(state="attached", timeout=30_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for tab, ids in SUB_TABS.items():
        open_tab(page, tab)
        for i in ids:  # shown by the tab's select event (a round trip to the server): wait for each
            page.locator(f"#{i}").first.wait_for(state="attached", timeout=30_000)
        page.screenshot(path=str(SHOTS / f"{tab.removeprefix('img2img_').removesuffix('_tab')}.png"))
    open_tab(page, "tab_pnginfo")
    page.screenshot(path=str(SHOTS / "png_info.png"))
    assert page.hosts == {f"127.0.0.1:{ui_server.port}"}  # fonts, scripts, analytics: nothing from elsewhere
    assert ui_server.get("/sdapi/v1/samplers").status_code == 200  # the API beside the page


def test_img2img_from_the_page_gives_the_api_pixels(page, ui_server, tmp_path):
    src = source_png(tmp_path / "src.png")
    upload(page, "img2img_image", src)
    common(page)
    info = generate(page)
    assert "a red cat" in info and "Steps: 4" in info and "Seed: 5" in info and "Size: 64x64" in info
    ours = gallery_images(page, ui_server)[0]
    theirs = api_image(ui_server, api_request(init_images=[b64(src)]))
    assert np.array_equal(pixels(ours), pixels(theirs))
    page.screenshot(path=str(SHOTS / "img2img_result.png"))


def test_the_sd_vae_quicksetting_is_the_servers_setting(page, ui_server, tmp_path):
    src = source_png(tmp_path / "src.png")
    upload(page, "img2img_image", src)
    common(page)
    assert page.locator("#setting_sd_vae input").first.input_value() == "Automatic"
    choose(page, "setting_sd_vae", "other.safetensors")
    try:
        page.wait_for_function("async () => (await (await fetch('/sdapi/v1/options')).json()).sd_vae"
                               " === 'other.safetensors'")  # set for every job, as A1111's quicksettings
        assert "VAE: other" in generate(page)
        ours = pixels(gallery_images(page, ui_server)[0])
        request = api_request(init_images=[b64(src)])
        assert np.array_equal(ours, pixels(api_image(ui_server, request)))  # the API's jobs use it too
        own = api_image(ui_server, {**request, "override_settings": {"sd_vae": "None"}})
        assert np.abs(ours - pixels(own)).mean() > 5  # and it is not the checkpoint's own VAE
        # a change made through the API shows on the next page load
        assert ui_server.post("/sdapi/v1/options", json={"sd_vae": "None"}).status_code == 200
        page.reload()  # (Gradio fills in values read at load just after the page is drawn)
        page.wait_for_function("() => document.querySelector('#setting_sd_vae input')?.value === 'None'")
    finally:
        ui_server.post("/sdapi/v1/options", json={"sd_vae": "Automatic"})


def test_inpaint_with_a_painted_mask_redraws_only_under_the_brush(page, ui_server, tmp_path):
    src = source_png(tmp_path / "src.png", 128, 128, seed=1)
    open_tab(page, "img2img_inpaint_tab")
    upload(page, "img2maskimg", src)
    drag(page, "img2maskimg")
    common(page, size=128)
    info = generate(page)
    assert "Mask blur: 4" in info
    out, before = pixels(gallery_images(page, ui_server)[0]), pixels(Image.open(src))
    for corner in (np.s_[:10, :10], np.s_[:10, -10:], np.s_[-10:, :10], np.s_[-10:, -10:]):  # far from the stroke
        assert np.array_equal(out[corner], before[corner])
    assert np.abs(out[60:68, 60:68] - before[60:68, 60:68]).mean() > 2  # under it
    page.screenshot(path=str(SHOTS / "inpaint_result.png"))


def test_inpaint_sketch_and_sketch_bake_strokes_in(page, ui_server, tmp_path):
    src = source_png(tmp_path / "src.png", seed=2)
    common(page, seed=9)
    results = {}
    for tab, editor in (("img2img_inpaint_sketch_tab", "inpaint_sketch"), ("img2img_img2img_sketch_tab", "img2img_sketch")):
        open_tab(page, tab)
        upload(page, editor, src)
        drag(page, editor)
        generate(page)
        results[editor] = pixels(gallery_images(page, ui_server)[0])
    before = pixels(Image.open(src))
    sketch_inpaint = results["inpaint_sketch"]
    assert np.array_equal(sketch_inpaint[:8], before[:8])  # inpaint sketch keeps what was not drawn on
    assert np.abs(sketch_inpaint[28:36, 28:36] - before[28:36, 28:36]).mean() > 2
    assert np.abs(results["img2img_sketch"][:8] - before[:8]).mean() > 1  # sketch: img2img of the whole picture


def test_inpaint_upload_gives_the_api_pixels(page, ui_server, tmp_path):
    src = source_png(tmp_path / "src.png", seed=3)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 44, 44))
    mask.save(tmp_path / "mask.png")
    open_tab(page, "img2img_inpaint_upload_tab")
    upload(page, "img_inpaint_base", src)
    upload(page, "img_inpaint_mask", tmp_path / "mask.png")
    common(page)
    set_value(page, "img2img_inpaint_full_res_padding", 8)
    page.locator("#img2img_inpaint_full_res label:has-text('Only masked')").click()
    page.locator("#img2img_inpainting_fill label:has-text('latent noise')").click()
    info = generate(page)
    assert "Masked content: latent noise" in info and "Inpaint area: Only masked" in info
    ours = gallery_images(page, ui_server)[0]
    theirs = api_image(ui_server, api_request(init_images=[b64(src)], mask=b64(tmp_path / "mask.png"), mask_blur=4,
                                              inpainting_fill=2, inpaint_full_res=True, inpaint_full_res_padding=8))
    assert np.array_equal(pixels(ours), pixels(theirs))


def test_bad_input_is_a_message_and_the_server_keeps_serving(page, ui_server, tmp_path):
    generate(page, expect_error=True)  # no image
    assert "no image" in page.locator("#img2img_message .error").inner_text()
    open_tab(page, "img2img_inpaint_tab")
    upload(page, "img2maskimg", source_png(tmp_path / "src.png"))
    generate(page, expect_error=True)  # an image but no mask painted
    assert "no mask" in page.locator("#img2img_message .error").inner_text()
    open_tab(page, "img2img_img2img_tab")
    upload(page, "img2img_image", source_png(tmp_path / "src.png"))
    common(page, prompt="(" * 600)
    generate(page, expect_error=True)  # rejected by the server's own validation (too many brackets)
    assert "at most 512" in page.locator("#img2img_message .error").inner_text()
    common(page)
    assert "Steps: 4" in generate(page)


def test_png_info_round_trip_and_paste(page, ui_server, tmp_path):
    image = api_image(ui_server, api_request(init_images=[b64(source_png(tmp_path / "src.png"))], steps=3, seed=77,
                                             prompt="a blue (dog:1.2)", negative_prompt="blurry", cfg_scale=5.5))
    r = ui_server.post("/sdapi/v1/img2img", json=api_request(init_images=[b64(source_png(tmp_path / "src.png"))],
                                                             steps=3, seed=77, prompt="a blue (dog:1.2)",
                                                             negative_prompt="blurry", cfg_scale=5.5))
    (tmp_path / "result.png").write_bytes(base64.b64decode(r.json()["images"][0]))
    del image
    open_tab(page, "tab_pnginfo")
    upload(page, "pnginfo_image", tmp_path / "result.png")
    page.locator("#html_info_pnginfo").get_by_text("Seed: 77").wait_for()
    page.locator("#pnginfo_send_to_img2img").click()
    page.locator("#img2img_img2img_tab").wait_for(state="visible")
    assert page.locator("#img2img_prompt textarea").input_value() == "a blue (dog:1.2)"
    assert page.locator("#img2img_neg_prompt textarea").input_value() == "blurry"
    assert page.locator("#img2img_steps input[type=number]").input_value() == "3"
    assert page.locator("#img2img_seed input").input_value() == "77"
    assert page.locator("#img2img_cfg_scale input[type=number]").input_value() == "5.5"
    # the prompt box's paste button reads an infotext into the fields
    page.locator("#img2img_prompt textarea").fill("a green bird\nSteps: 9, Sampler: Euler a, CFG scale: 3, Seed: 12, "
                                                  "Size: 96x64, Denoising strength: 0.4")
    page.locator("#img2img_paste").click()
    page.wait_for_function("() => document.querySelector('#img2img_prompt textarea').value === 'a green bird'")
    assert page.locator("#img2img_steps input[type=number]").input_value() == "9"
    assert page.locator("#img2img_width input[type=number]").input_value() == "96"
    assert page.locator("#img2img_denoising_strength input[type=number]").input_value() == "0.4"
    assert page.locator("#img2img_sampling input").first.input_value() == "Euler a"


def test_interrupt_and_keyboard_shortcuts(page, ui_server, tmp_path):
    upload(page, "img2img_image", source_png(tmp_path / "src.png"))
    common(page, steps=150, size=256)
    set_value(page, "img2img_batch_count", 20)
    page.locator("#img2img_prompt textarea").press("Control+Enter")  # A1111: Ctrl+Enter generates
    page.locator("#img2img_progress [data-state=running]").get_by_text("ETA").wait_for()  # sampling has begun
    page.keyboard.press("Escape")  # … and Esc interrupts
    info = page.locator("#html_info_img2img")
    page.wait_for_function("() => (document.querySelector('#html_info_img2img .infotext')?.innerText || '')"
                           ".includes('Steps:')")
    assert "Steps: 150" in info.inner_text()
    assert len(gallery_images(page, ui_server)) < 20  # it stopped early
    assert ui_server.get("/sdapi/v1/progress").json()["state"]["interrupted"] in (True, False)


def test_live_preview_while_sampling_and_reuse_seed(page, ui_server, tmp_path):
    upload(page, "img2img_image", source_png(tmp_path / "src.png"))
    common(page, steps=150, size=256, seed=-1)
    set_value(page, "img2img_batch_count", 20)
    page.locator("#img2img_generate").click()
    preview = page.locator("#img2img_live_preview img").first
    preview.wait_for()  # A1111's live preview of the running job (every 10 steps by default)
    assert page.locator("#img2img_progress [data-state=running]").count() == 1  # shown while it runs
    width = page.evaluate("(img) => img.naturalWidth", preview.element_handle())
    assert width == 256 // 8  # the cheap approximation: one pixel per latent
    page.locator("#img2img_interrupt").click()
    info = page.locator("#html_info_img2img")
    page.wait_for_function("() => (document.querySelector('#html_info_img2img .infotext')?.innerText || '')"
                           ".includes('Steps:')")
    seed = int(info.inner_text().split("Seed: ")[1].split(",")[0])
    assert page.locator("#img2img_seed input[type=number]").input_value() == "-1"
    page.locator("#img2img_reuse_seed").click()  # the seed of the image shown, into the seed box
    page.wait_for_function(f"() => document.querySelector('#img2img_seed input[type=number]').value === '{seed}'")


def test_a_waiting_page_job_shows_its_place_in_the_queue(page, ui_server, tmp_path):
    src = source_png(tmp_path / "src.png")
    upload(page, "img2img_image", src)
    common(page)
    blocker = threading.Thread(target=api_image, args=(ui_server, api_request(init_images=[b64(src)], steps=150,
                                                                              size=256, n_iter=30)))
    blocker.start()
    try:
        ui_server.get("/internal/ping")
        page.wait_for_function("async () => { const r = await fetch('/sdapi/v1/progress'); "
                               "const j = await r.json(); return j.state.job_count > 0; }")
        page.locator("#img2img_generate").click()
        page.locator("#img2img_progress [data-state=queued]").wait_for()
        assert "In queue: 1 of 1" in page.locator("#img2img_progress").inner_text()
    finally:
        ui_server.post("/sdapi/v1/interrupt")
        blocker.join()
    page.wait_for_function("() => (document.querySelector('#html_info_img2img .infotext')?.innerText || '')"
                           ".includes('Steps:')")


def test_switching_models_and_send_to_inpaint(page, ui_server, tmp_path):
    upload(page, "img2img_image", source_png(tmp_path / "src.png"))
    common(page)
    choose(page, "setting_sd_model_checkpoint", "tiny-inpainting")
    try:
        assert "Model: retouch-tiny-inpainting" in generate(page)
    finally:
        choose(page, "setting_sd_model_checkpoint", "tiny")
    page.locator("#img2img_send_to_inpaint").click()
    page.locator("#img2img_inpaint_tab").wait_for(state="visible")
    page.locator("#img2maskimg canvas").first.wait_for()


@pytest.mark.parametrize("scale", [2.0])
def test_resize_by_shows_the_resolution_and_uses_it(page, ui_server, tmp_path, scale):
    upload(page, "img2img_image", source_png(tmp_path / "src.png", 48, 40))
    common(page)
    open_tab(page, "img2img_tab_resize_by")
    set_value(page, "img2img_scale", scale)
    page.locator("#img2img_scale_resolution_preview").get_by_text("96x80").wait_for()
    assert "Size: 96x80" in generate(page)


def test_batch_tab_processes_a_folder(page, ui_server):
    # names relative to the server's --batch-root; outputs named after their input, A1111's counter first
    job = ui_server.batch_root / "job1"
    inputs, outputs = job / "in", job / "out"
    inputs.mkdir(parents=True)
    for i in range(2):
        source_png(inputs / f"pic{i}.png", seed=i)
    open_tab(page, "img2img_batch_tab")
    page.locator("#img2img_batch_input_dir textarea, #img2img_batch_input_dir input").first.fill("job1/in")
    page.locator("#img2img_batch_output_dir textarea, #img2img_batch_output_dir input").first.fill("job1/out")
    common(page)
    generate(page)
    assert sorted(p.name for p in outputs.iterdir()) == ["00000-pic0.png", "00001-pic1.png"]
    assert "Steps: 4" in Image.open(outputs / "00000-pic0.png").info["parameters"]
    assert len(gallery_images(page, ui_server)) == 2


def test_batch_tab_refuses_folders_outside_its_roots(page, ui_server, tmp_path):
    outside = tmp_path / "private"
    outside.mkdir()
    source_png(outside / "photo.png")
    open_tab(page, "img2img_batch_tab")
    box = page.locator("#img2img_batch_input_dir textarea, #img2img_batch_input_dir input").first
    out = page.locator("#img2img_batch_output_dir textarea, #img2img_batch_output_dir input").first
    common(page)
    for given, made in [(str(outside), None), ("../" * 8 + str(outside).lstrip("/"), None),
                        ("job1/in", str(tmp_path / "made-by-page"))]:
        box.fill(given)
        out.fill(made or "")
        generate(page, expect_error=True)
        message = page.locator("#img2img_message .error").inner_text()
        assert "not a folder below this server's batch folders" in message, message
        assert str(ui_server.batch_root) not in message  # the server's own paths are never shown
    assert not (tmp_path / "made-by-page").exists()


def test_the_page_is_at_root_beside_the_api_and_nowebui_serves_the_api_only(ui_server, tmp_path_factory):
    from tests.api.conftest import start

    page = ui_server.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    api_only = start(tmp_path_factory, "--ckpt", "tiny")  # the helper passes --nowebui unless --webui is given
    try:
        assert api_only.get("/").status_code == 404
        assert api_only.get("/sdapi/v1/samplers").status_code == 200
    finally:
        api_only.stop()


def test_without_the_ui_extra_serve_says_how_to_get_the_page(monkeypatch):
    import argparse

    from retouch import ui
    from retouch.cli.serve import _mount_page

    monkeypatch.setattr(ui, "available", lambda: False)
    message = _mount_page(object(), argparse.Namespace(nowebui=False, host="127.0.0.1", port=7860))
    assert "pip install 'retouch[ui]'" in message
    assert _mount_page(object(), argparse.Namespace(nowebui=True, host="127.0.0.1", port=7860)) == ""
