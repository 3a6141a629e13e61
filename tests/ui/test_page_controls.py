"""The page as a first-time A1111 user met it (issue 24), in Chromium: the defects they hit, and A1111's controls.

A server set up as in the report: ``--ckpt <file> --ckpt-dir <its folder>`` with the LoRA and embeddings folders
inside that folder, and a styles file."""

from __future__ import annotations

import io
import shutil
import time
import zipfile

import numpy as np
import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

from tests.api.conftest import start
from tests.conftest import MODELS, need_shared
from tests.ui.conftest import SHOTS, gallery_images, pixels, source_png
from tests.ui.test_page import choose, common, generate, open_tab, set_value, upload

STYLES = 'name,prompt,negative_prompt\nwatercolor,"{prompt}, watercolor painting","photo"\n'


@pytest.fixture(scope="module")
def user_server(tmp_path_factory):
    need_shared()
    models = tmp_path_factory.mktemp("models")
    for name in ("tiny-sd1.safetensors", "tiny-sd1.yaml"):
        shutil.copy(MODELS / name, models / name)
    for folder in ("tiny-clip-vit-large-patch14", "lora", "embeddings"):
        shutil.copytree(MODELS / folder, models / folder)
    styles = tmp_path_factory.mktemp("styles") / "styles.csv"
    styles.write_text(STYLES)
    out = tmp_path_factory.mktemp("out")
    s = start(tmp_path_factory, "--webui", "--ckpt", str(models / "tiny-sd1.safetensors"), "--ckpt-dir", str(models),
              "--lora-dir", str(models / "lora"), "--embeddings-dir", str(models / "embeddings"),
              "--styles-file", str(styles), "--outdir", str(out))
    s.styles, s.out = styles, out
    yield s
    s.stop()


@pytest.fixture
def tab(browser, user_server, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.requests = []
    page.on("request", lambda r: page.requests.append((r.method, r.url.split(str(user_server.port), 1)[1])))
    page.goto(user_server.url + "/", wait_until="domcontentloaded")
    page.locator("#img2img_prompt textarea").wait_for()
    page.locator("#img2img_denoising_strength input[type=number]").wait_for()
    yield page
    if getattr(request.node, "failed", False):
        page.screenshot(path=str(SHOTS / "failures" / f"{request.node.name}.png"), full_page=True)
    context.close()


def visible(page, selector: str) -> bool:
    return page.locator(selector).first.is_visible()


def long_job(page, tmp_path):
    upload(page, "img2img_image", source_png(tmp_path / "src.png"))
    common(page, steps=150, size=256)
    set_value(page, "img2img_batch_count", 20)


# ---------------------------------------------------------------------------------------------
# Defects
def test_a_running_job_shows_interrupt_in_place_of_generate_and_a_second_generate_does_nothing(tab, user_server,
                                                                                              tmp_path):
    long_job(tab, tmp_path)
    assert visible(tab, "#img2img_generate") and not visible(tab, "#img2img_interrupt")
    tab.locator("#img2img_generate").click()
    try:
        tab.locator("#img2img_progress [data-state=running]").wait_for()
        assert not visible(tab, "#img2img_generate")
        assert visible(tab, "#img2img_interrupt") and visible(tab, "#img2img_skip")
        running = user_server.get("/sdapi/v1/progress").json()["state"]["job"]
        tab.locator("#img2img_prompt textarea").press("Control+Enter")  # a second Generate: nothing starts
        time.sleep(1)
        assert user_server.get("/internal/pending-tasks").json()["tasks"] == []
        assert user_server.get("/sdapi/v1/progress").json()["state"]["job"] == running
        tab.locator("#img2img_interrupt").click()  # … and Interrupt still reaches the running job
        tab.wait_for_function("() => (document.querySelector('#html_info_img2img .infotext')?.innerText || '')"
                              ".includes('Steps:')")
    finally:
        user_server.post("/sdapi/v1/interrupt")  # a failure above must not leave a 20-image job running
    assert len(gallery_images(tab, user_server)) < 20
    tab.locator("#img2img_generate").wait_for(state="visible")
    assert not visible(tab, "#img2img_interrupt")


def test_the_checkpoint_picker_shows_the_loaded_checkpoint(tab, user_server):
    title = user_server.get("/sdapi/v1/sd-models").json()[0]["title"]
    tab.wait_for_function(f"() => document.querySelector('#setting_sd_model_checkpoint input')?.value === '{title}'")
    tab.locator("#refresh_sd_model_checkpoint").click()
    time.sleep(1)
    assert tab.locator("#setting_sd_model_checkpoint input").input_value() == title


def test_an_empty_seed_is_a_random_seed(tab, user_server, tmp_path):
    upload(tab, "img2img_image", source_png(tmp_path / "src.png"))
    common(tab)
    tab.locator("#img2img_seed input").fill("")
    info = generate(tab)
    assert int(info.split("Seed: ")[1].split(",")[0]) >= 0
    before = len([r for r in tab.requests if "queue/join" in r[1]])
    time.sleep(2)  # polling stopped with the job
    assert len([r for r in tab.requests if "queue/join" in r[1]]) == before


def test_networks_embeddings_and_vaes_are_not_checkpoints(tab, user_server):
    titles = [m["title"] for m in user_server.get("/sdapi/v1/sd-models").json()]
    assert titles == [t for t in titles if t.startswith("tiny-sd1.safetensors")] and len(titles) == 1
    tab.locator("#setting_sd_model_checkpoint input").click()
    options = tab.locator("ul[role=listbox] li").all_inner_texts()
    assert [o for o in options if "lora" in o.lower() or "emb" in o.lower()] == []
    r = user_server.post("/sdapi/v1/options", json={"sd_model_checkpoint": "lora/tiny_lora_kohya.safetensors"})
    assert r.status_code == 422 and "could not find checkpoint" in r.text


def test_a_page_job_sends_only_its_sub_tabs_inputs_and_tabs_switch_in_the_browser(tab, user_server, tmp_path):
    src = source_png(tmp_path / "src.png")
    open_tab(tab, "img2img_inpaint_tab")
    upload(tab, "img2maskimg", src)  # an editor that now holds a picture …
    open_tab(tab, "img2img_img2img_tab")
    upload(tab, "img2img_image", src)
    common(tab)
    before = len(tab.requests)
    generate(tab)
    uploads = [r for r in tab.requests[before:] if r[1].startswith("/gradio_api/upload")]
    assert uploads == []  # … uploads nothing for an img2img job (9 uploads before)
    tab.locator("#img2img_generate").wait_for(state="visible")  # the job's own events are over
    before = len(tab.requests)
    tab.locator("#img2img_inpaint_tab-button").click()
    tab.locator("#img2img_mask_blur").wait_for(state="visible", timeout=2_000)  # shown by the click itself
    # No round trip: an event sent to the server is a POST (queue/join, run); the job's event stream may still
    # reconnect with a GET of queue/data under load, which sends nothing.
    assert [r for r in tab.requests[before:] if "/gradio_api/" in r[1] and r[0] == "POST"] == []


def test_the_live_preview_takes_the_gallerys_place_while_a_job_runs(tab, user_server, tmp_path):
    long_job(tab, tmp_path)
    tab.locator("#img2img_generate").click()
    try:
        preview = tab.locator("#img2img_live_preview img").first
        preview.wait_for(state="visible")
        box = preview.bounding_box()
        assert box["width"] >= 300 and not visible(tab, "#img2img_gallery")  # readable, where the gallery was
        shown = tab.evaluate("""() => [...document.querySelectorAll('.progress-text, .meta-text, .meta-text-center')]
            .filter((e) => e.offsetParent !== null && /processing/.test(e.textContent)).length""")
        assert shown == 0  # one progress bar: ours, not Gradio's "processing | 5.5/2.0s" as well
        tab.screenshot(path=str(SHOTS / "live_preview.png"))
    finally:
        user_server.post("/sdapi/v1/interrupt")
    tab.locator("#img2img_gallery").wait_for(state="visible")
    assert not visible(tab, "#img2img_live_preview")


def test_no_duplicate_element_ids_and_expected_errors_are_one_line_messages(tab, user_server):
    duplicates = tab.evaluate("""() => { const ids = [...document.querySelectorAll('[id]')].map((e) => e.id)
        .filter((id) => id); return ids.filter((id, i) => ids.indexOf(id) !== i); }""")
    assert duplicates == []
    generate(tab, expect_error=True)  # no image
    message = tab.locator("#img2img_message .error").inner_text()
    assert message == "img2img: no image; upload one first"


# ---------------------------------------------------------------------------------------------
# A1111's controls
def test_token_counters_count_as_a1111(tab, user_server):
    box = tab.locator("#img2img_prompt textarea")
    for text, shown in (("a cat", "2/75"), ("a cat BREAK a dog", "77/150"), ("tiny-emb-three", "3/75"),
                        (", ".join(["word"] * 40), "79/150")):
        box.fill(text)
        tab.locator("#img2img_token_counter").get_by_text(shown).wait_for()
    tab.locator("#img2img_neg_prompt textarea").fill("blurry AND dark")
    tab.locator("#img2img_negative_token_counter").get_by_text("3/75").wait_for()  # no AND in negatives


def test_styles_apply_edit_and_run(tab, user_server, tmp_path):
    upload(tab, "img2img_image", source_png(tmp_path / "src.png"))
    common(tab, prompt="a red cat")
    choose(tab, "img2img_styles", "watercolor")
    info = generate(tab)
    assert info.startswith("a red cat, watercolor painting") and "Negative prompt: photo" in info
    tab.locator("#img2img_style_apply").click()  # the styles written into the prompts, the selection cleared
    tab.wait_for_function("() => document.querySelector('#img2img_prompt textarea').value"
                          " === 'a red cat, watercolor painting'")
    assert tab.locator("#img2img_neg_prompt textarea").input_value() == "photo"
    tab.locator("#img2img_styles_dialog").click()
    name, prompt = tab.locator("#img2img_edit_style_name input"), tab.locator("#img2img_edit_style_prompt textarea")
    name.fill("ink")
    name.press("Enter")  # a new name, committed as a user does before moving on
    prompt.fill("ink drawing")
    expect(name).to_have_value("ink")
    expect(prompt).to_have_value("ink drawing")
    tab.locator("#img2img_edit_style_save").click()
    tab.locator("#img2img_edit_style_message").get_by_text("Saved style ink").wait_for()
    assert "ink,ink drawing," in user_server.styles.read_text()
    assert [s["name"] for s in user_server.get("/sdapi/v1/prompt-styles").json()] == ["watercolor", "ink"]
    tab.locator("#img2img_edit_style_delete").click()
    tab.wait_for_function("async () => (await (await fetch('/sdapi/v1/prompt-styles')).json()).length === 1")


def test_extra_network_cards_insert_and_remove_their_text(tab, user_server):
    open_tab(tab, "img2img_lora")
    card = tab.locator("#img2img_lora_cards .card", has_text="tiny_lora_kohya")
    card.click()
    box = tab.locator("#img2img_prompt textarea")
    tab.wait_for_function("() => document.querySelector('#img2img_prompt textarea').value.includes("
                          "'<lora:tiny_lora_kohya:1>')")
    card.click()  # a second click takes it out
    tab.wait_for_function("() => !document.querySelector('#img2img_prompt textarea').value.includes('<lora:')")
    tab.locator("#img2img_lora_extra_search").fill("alias")
    assert tab.locator("#img2img_lora_cards .card:not(.hidden)").count() == 1
    open_tab(tab, "img2img_textual_inversion")
    tab.locator("#img2img_textual_inversion_cards .card", has_text="tiny-emb-one").click()
    tab.wait_for_function("() => document.querySelector('#img2img_prompt textarea').value === 'tiny-emb-one'")
    assert box.input_value() == "tiny-emb-one"
    open_tab(tab, "img2img_checkpoints")
    assert tab.locator("#img2img_checkpoints_cards .card").count() == 1
    tab.screenshot(path=str(SHOTS / "extra_networks.png"))


def test_soft_inpainting_from_the_page(tab, user_server, tmp_path):
    src = source_png(tmp_path / "src.png")
    mask = tmp_path / "mask.png"
    image = Image.new("L", (64, 64), 0)
    image.paste(255, (16, 16, 48, 48))
    image.save(mask)
    open_tab(tab, "img2img_inpaint_upload_tab")
    upload(tab, "img_inpaint_base", src)
    upload(tab, "img_inpaint_mask", mask)
    common(tab)
    tab.locator("#soft_inpainting_accordion").click()
    tab.locator("#soft_inpainting_enabled input").check()
    info = generate(tab)
    assert "Soft inpainting enabled: True" in info


def test_size_tools_copy_image_to_save_and_zip(tab, user_server, tmp_path):
    src = tmp_path / "src.png"
    source_png(src, 96, 64)
    upload(tab, "img2img_image", src)
    set_value(tab, "img2img_width", 512)
    set_value(tab, "img2img_height", 256)
    tab.locator("#img2img_res_switch_btn").click()
    tab.wait_for_function("() => document.querySelector('#img2img_width input[type=number]').value === '256'")
    assert tab.locator("#img2img_height input[type=number]").input_value() == "512"
    tab.locator("#img2img_detect_image_size_btn").click()
    tab.wait_for_function("() => document.querySelector('#img2img_width input[type=number]').value === '96'")
    assert tab.locator("#img2img_height input[type=number]").input_value() == "64"
    tab.locator("#img2img_copy_from_img2img_to_inpaint").click()  # "Copy image to: inpaint"
    tab.locator("#img2maskimg canvas").first.wait_for(state="visible")
    open_tab(tab, "img2img_img2img_tab")
    common(tab, size=64)
    set_value(tab, "img2img_batch_size", 2)
    generate(tab)
    tab.locator("#save_img2img").click()
    tab.locator("#download_files_img2img a").first.wait_for()
    saved = sorted((user_server.out / "saved").iterdir())  # the selected (first) image: the batch's grid
    assert len(saved) == 1 and Image.open(saved[0]).info["parameters"].startswith("a red cat")
    tab.locator("#save_zip_img2img").click()
    tab.locator("#download_files_img2img").get_by_text(".zip").wait_for()
    href = tab.locator("#download_files_img2img a").first.get_attribute("href")
    data = requests.get(href if href.startswith("http") else user_server.url + href, timeout=60)
    names = zipfile.ZipFile(io.BytesIO(data.content)).namelist()
    assert len(names) == 3  # every image shown: the grid (A1111's return_grid) and the two of the batch


def test_ctrl_up_and_down_change_the_emphasis_at_the_cursor(tab, user_server):
    box = tab.locator("#img2img_prompt textarea")
    box.fill("a red cat")
    box.evaluate("(el) => el.setSelectionRange(7, 7)")  # in "cat"
    for key, text in (("ArrowUp", "a red (cat:1.1)"), ("ArrowUp", "a red (cat:1.2)"), ("ArrowDown", "a red (cat:1.1)"),
                      ("ArrowDown", "a red cat")):
        box.press(f"Control+{key}")
        assert box.input_value() == text
    box.fill("((old style))")
    box.evaluate("(el) => el.setSelectionRange(4, 4)")
    box.press("Control+ArrowUp")
    assert box.input_value() == "(old style:1.3)"  # 1.21 rounded to 0.1, then one step up


def test_settings_tab_writes_the_servers_options(tab, user_server, tmp_path):
    open_tab(tab, "tab_settings")
    try:
        # the fields take the server's values from the page's load events: a value typed before those land is
        # overwritten and the page answers "Nothing changed." (on a loaded machine they can come seconds late)
        for _ in range(3):
            set_value(tab, "setting_CLIP_stop_at_last_layers", 2)
            set_value(tab, "setting_token_merging_ratio_img2img", 0.5)
            tab.locator("#settings_submit").click()
            result = tab.locator("#settings_result p")
            result.wait_for()
            if "Nothing changed" not in result.inner_text():
                break
            tab.evaluate("() => document.querySelector('#settings_result p').remove()")
        tab.locator("#settings_result").get_by_text("CLIP_stop_at_last_layers").wait_for()
        tab.locator("#settings_result").get_by_text("token_merging_ratio_img2img").wait_for()
        options = user_server.get("/sdapi/v1/options").json()
        assert (options["CLIP_stop_at_last_layers"], options["token_merging_ratio_img2img"]) == (2, 0.5)
        open_tab(tab, "tab_img2img")
        upload(tab, "img2img_image", source_png(tmp_path / "src.png"))
        common(tab)
        info = generate(tab)
        assert "Clip skip: 2" in info and "Token merging ratio: 0.5" in info
    finally:
        user_server.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1, "token_merging_ratio_img2img": 0})


def test_batch_of_uploaded_files(tab, user_server, tmp_path):
    files = [source_png(tmp_path / f"up{i}.png", seed=i) for i in range(2)]
    open_tab(tab, "img2img_batch_tab")
    open_tab(tab, "img2img_batch_upload_tab")
    tab.locator("#img2img_batch_upload input[type=file]").set_input_files([str(f) for f in files])
    tab.locator("#img2img_batch_upload").get_by_text("up1").wait_for()
    common(tab)
    generate(tab)
    assert len(gallery_images(tab, user_server)) == 2
    assert pixels(gallery_images(tab, user_server)[0]).shape == (64, 64, 3)
    assert not np.array_equal(*(pixels(i) for i in gallery_images(tab, user_server)))


def test_the_script_dropdown_is_there(tab, user_server):
    assert tab.locator("#script_list input").input_value() == "None"



def test_expected_errors_leave_no_traceback_in_the_servers_log(tab, user_server):
    before = user_server.log.read_text(errors="replace").count("Traceback")
    tab.locator("#img2img_send_to_inpaint").click()  # nothing to send
    tab.locator("#save_img2img").click()  # nothing to save
    generate(tab, expect_error=True)  # no image
    open_tab(tab, "img2img_batch_tab")
    generate(tab, expect_error=True)  # batch from folders is off on this server
    assert "off on this server" in tab.locator("#img2img_message").inner_text()
    time.sleep(1)
    assert user_server.log.read_text(errors="replace").count("Traceback") == before
