"""The txt2img tab in Chromium (issue 25): A1111's controls and ids, its pixels equal the API's, the hires fix
and the refiner accordions, "Send to img2img"."""

from __future__ import annotations

import base64
import io

import numpy as np
import requests
from PIL import Image

from tests.ui.conftest import SHOTS, pixels
from tests.ui.test_page import open_tab, set_value

IDS = ("txt2img_prompt", "txt2img_neg_prompt", "txt2img_generate", "txt2img_sampling", "txt2img_steps",
       "txt2img_width", "txt2img_height", "txt2img_cfg_scale", "txt2img_seed", "txt2img_hr",
       "script_txt2img_refiner_enable", "txt2img_gallery", "html_info_txt2img", "txt2img_send_to_img2img",
       "txt2img_lora-button")
HIRES_IDS = ("txt2img_hr_upscaler", "txt2img_hires_steps", "txt2img_denoising_strength", "txt2img_hr_scale",
             "txt2img_hr_resize_x", "txt2img_hr_resize_y", "hr_checkpoint", "hr_sampler", "hr_scheduler",
             "hires_prompt", "hires_neg_prompt")


def _generate(page) -> str:
    page.evaluate("""() => document.querySelectorAll('#html_info_txt2img .infotext, #txt2img_message .error')
        .forEach(node => { node.dataset.stale = '1'; })""")
    page.locator("#txt2img_generate").click()
    page.wait_for_function("""() => {
        const info = document.querySelector('#html_info_txt2img .infotext:not([data-stale])')?.innerText || '';
        return info.includes('Steps:') || document.querySelector('#txt2img_message .error:not([data-stale])'); }""")
    error = page.locator("#txt2img_message .error")
    assert not error.count(), error.inner_text()
    return page.locator("#html_info_txt2img .infotext").inner_text()


def _gallery(page, server) -> list[Image.Image]:
    out = []
    for img in page.locator("#txt2img_gallery img").all():
        src = img.get_attribute("src")
        data = requests.get(src if src.startswith("http") else server.url + src, timeout=60).content
        out.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return out


def test_txt2img_with_hires_fix_gives_the_api_pixels(page, ui_server):
    open_tab(page, "tab_txt2img")
    for i in IDS:
        page.locator(f"#{i}").first.wait_for(state="attached", timeout=30_000)
    page.locator("#txt2img_prompt textarea").fill("a red cat")
    for elem_id, value in (("txt2img_steps", 3), ("txt2img_width", 64), ("txt2img_height", 64),
                           ("txt2img_seed", 17)):
        set_value(page, elem_id, value)
    page.locator("#txt2img_hr > button").first.click()  # opening A1111's InputAccordion turns the hires fix on
    page.locator("#txt2img_hr-checkbox input[type=checkbox]:checked").wait_for()
    for i in HIRES_IDS:
        page.locator(f"#{i}").first.wait_for(state="attached", timeout=30_000)
    set_value(page, "txt2img_hr_scale", 1.5)
    set_value(page, "txt2img_hires_steps", 2)
    set_value(page, "txt2img_denoising_strength", 0.6)
    page.wait_for_function("() => document.querySelector('#txtimg_hr_finalres')?.innerText.includes('96x96')")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "txt2img.png"))
    infotext = _generate(page)
    assert "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Latent" in infotext
    (shown,) = _gallery(page, ui_server)
    request = {"prompt": "a red cat", "steps": 3, "width": 64, "height": 64, "seed": 17, "sampler_name": "DPM++ 2M",
               "scheduler": "Automatic", "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2,
               "denoising_strength": 0.6, "hr_upscaler": "Latent"}
    answer = ui_server.post("/sdapi/v1/txt2img", json=request)
    assert answer.status_code == 200, answer.text
    api = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert shown.size == (96, 96)
    assert np.array_equal(pixels(shown), pixels(api))
    page.screenshot(path=str(SHOTS / "txt2img_result.png"))

    page.locator("#txt2img_send_to_img2img").click()  # the picture into img2img, whose tab opens
    page.locator("#img2img_image img").first.wait_for(state="visible")
    assert page.locator("#tab_img2img").is_visible()


def test_the_refiner_accordion_reaches_the_job(page, ui_server):
    """Refiner on, naming the model the job runs on: A1111 never switches to the same checkpoint, so the job is the
    plain one; the img2img tab has the same accordion."""
    page.locator("#script_img2img_refiner_enable").first.wait_for(state="attached")
    open_tab(page, "tab_txt2img")
    page.locator("#txt2img_prompt textarea").fill("a cat")
    for elem_id, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_seed", 3)):
        set_value(page, elem_id, value)
    page.locator("#script_txt2img_refiner_enable > button").first.click()
    page.locator("#script_txt2img_refiner_enable-checkbox input[type=checkbox]:checked").wait_for()
    assert page.locator("#script_txt2img_refiner_switch_at").count() == 1
    page.locator("#script_txt2img_refiner_checkpoint input").first.click()
    page.locator("ul[role=listbox] li").first.click()
    infotext = _generate(page)
    assert "Steps: 2" in infotext and "Refiner" not in infotext
