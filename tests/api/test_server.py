"""The A1111-compatible API, over HTTP, against a real server process."""

import base64
import io
import json
import re
import threading
import time

import numpy as np
import pytest
from PIL import Image

from retouch.processing import StableDiffusionProcessingImg2Img, process_images
from tests.api.conftest import b64_file, b64_image, start
from tests.conftest import ORACLE
from tests.pipeline.helpers import build_from_request, pixels, source_image


def decode(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def oracle_request(case):
    request = json.loads((ORACLE / "cases" / f"{case}.json").read_text())["request"]
    api = dict(request)
    api["init_images"] = [b64_file(ORACLE / "inputs" / name) for name in request["init_images"]]
    if request.get("mask"):
        api["mask"] = b64_file(ORACLE / "inputs" / request["mask"])
    return request, api


@pytest.mark.parametrize("case", ["002", "004", "005", "014", "016", "019", "025"])
def test_oracle_cases_give_the_library_pixels(oracle_server, case, tiny_sd1, tiny_sd1_inpainting):
    request, api = oracle_request(case)
    r = oracle_server.post("/sdapi/v1/img2img", json=api)
    assert r.status_code == 200, r.text
    body = r.json()
    image = decode(body["images"][0])
    model = tiny_sd1_inpainting if request["override_settings"].get("sd_model_checkpoint") else tiny_sd1
    library = process_images(build_from_request(request, model)).images[0]
    assert np.array_equal(pixels(image), pixels(library))
    reference = pixels(Image.open(ORACLE / "cases" / f"{case}_out0.png"))
    assert np.abs(pixels(image) - reference).max() <= 2
    expected = (ORACLE / "cases" / f"{case}_infotext0.txt").read_text()
    assert image.info["parameters"].rsplit("Version", 1)[0] == expected.rsplit("Version", 1)[0]
    info = json.loads(body["info"])
    assert info["infotexts"][0] == image.info["parameters"] and body["parameters"]["init_images"] is None


def test_api_defaults_are_a1111s(server):
    r = server.post("/sdapi/v1/img2img", json={"init_images": [b64_image(source_image())], "width": 64, "height": 64,
                                               "steps": 4, "seed": 1})
    info = json.loads(r.json()["info"])
    assert info["sampler_name"] == "Euler" and info["steps"] == 4
    params = r.json()["parameters"]
    assert (params["inpaint_full_res"], params["inpainting_fill"], params["inpaint_full_res_padding"]) == (True, 0, 0)


def test_server_timing_header_accounts_for_the_request(server):
    start = time.perf_counter()
    r = server.post("/sdapi/v1/img2img", json={"init_images": [b64_image(source_image())], "width": 64, "height": 64,
                                               "steps": 12, "seed": 1})
    elapsed_ms = (time.perf_counter() - start) * 1000
    parts = dict(part.strip().split(";dur=") for part in r.headers["Server-Timing"].split(","))
    timing = {name: float(value) for name, value in parts.items()}
    assert set(timing) == {"decode", "queue", "job", "encode"}
    assert all(value >= 0 for value in timing.values())
    assert timing["job"] > 0 and sum(timing.values()) <= elapsed_ms


def test_missing_init_images_is_404(server):
    r = server.post("/sdapi/v1/img2img", json={"prompt": "x"})
    assert r.status_code == 404 and r.json()["detail"] == "Init image not found"


def test_send_images_include_init_images_and_data_uris(server):
    img = b64_image(source_image())
    r = server.post("/sdapi/v1/img2img", json={"init_images": ["data:image/png;base64," + img], "width": 64,
                                               "height": 64, "steps": 3, "send_images": False,
                                               "include_init_images": True})
    assert r.status_code == 200 and r.json()["images"] == []
    assert r.json()["parameters"]["init_images"] == ["data:image/png;base64," + img]


def test_batch_and_grid_only_when_saving(server):
    base = {"init_images": [b64_image(source_image())], "width": 64, "height": 64, "steps": 3, "batch_size": 2}
    assert len(server.post("/sdapi/v1/img2img", json=base).json()["images"]) == 2
    saved = server.post("/sdapi/v1/img2img", json={**base, "save_images": True}).json()
    assert len(saved["images"]) == 3 and json.loads(saved["info"])["index_of_first_image"] == 1


def test_latent_mask_is_decoded_and_honoured(server, bundled_tiny):
    mask, latent = Image.new("L", (64, 64), 0), Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 64, 32))
    latent.paste(255, (0, 0, 32, 64))
    base = {"init_images": [b64_image(source_image())], "mask": b64_image(mask), "width": 64, "height": 64,
            "steps": 4, "seed": 5, "inpaint_full_res": False, "mask_blur": 0}
    with_latent = decode(server.post("/sdapi/v1/img2img", json={**base, "latent_mask": b64_image(latent)})
                         .json()["images"][0])
    without = decode(server.post("/sdapi/v1/img2img", json=base).json()["images"][0])
    p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, init_images=[source_image()], mask=mask, width=64,
                                         height=64, steps=4, seed=5, inpaint_full_res=False, mask_blur=0,
                                         sampler_name="Euler")
    p.latent_mask = latent
    assert np.array_equal(pixels(with_latent), pixels(process_images(p).images[0]))
    assert not np.array_equal(pixels(with_latent), pixels(without))
    bad = server.post("/sdapi/v1/img2img", json={**base, "latent_mask": "@@@"})
    assert bad.status_code == 422 and "latent_mask" in bad.json()["detail"]


def test_infotext_fills_unset_fields(server):
    r = server.post("/sdapi/v1/img2img", json={
        "init_images": [b64_image(source_image())], "width": 64, "height": 64,
        "infotext": "a dog\nNegative prompt: ugly\nSteps: 3, Sampler: Euler a, CFG scale: 5.0, Seed: 77, Size: 64x64"})
    info = json.loads(r.json()["info"])
    assert (info["prompt"], info["negative_prompt"], info["steps"], info["seed"]) == ("a dog", "ugly", 3, 77)
    assert info["sampler_name"] == "Euler a" and info["cfg_scale"] == 5.0


def test_override_settings_switch_checkpoints_and_options(server):
    base = {"init_images": [b64_image(source_image())], "width": 64, "height": 64, "steps": 3}
    r = server.post("/sdapi/v1/img2img", json={**base, "override_settings": {
        "sd_model_checkpoint": "tiny-inpainting", "CLIP_stop_at_last_layers": 2}})
    info = json.loads(r.json()["info"])
    assert info["sd_model_name"] == "retouch-tiny-inpainting-v1" and "Clip skip: 2" in info["infotexts"][0]
    # restored afterwards: the next request uses the default model again
    assert json.loads(server.post("/sdapi/v1/img2img", json=base).json()["info"])["sd_model_name"] == "retouch-tiny-v1"
    bad = server.post("/sdapi/v1/img2img", json={**base, "override_settings": {"sd_model_checkpoint": "nope"}})
    assert bad.status_code == 422 and "could not find checkpoint with name 'nope'" in bad.json()["detail"]


def test_token_merging_as_a1111s_api_takes_it(server, bundled_tiny):
    """The option (override or pasted infotext) merges; the request field is ignored, as A1111's API drops it."""
    base = {"init_images": [b64_image(source_image())], "prompt": "a", "width": 64, "height": 64, "steps": 3, "seed": 9}
    overridden = server.post("/sdapi/v1/img2img", json={**base, "override_settings": {"token_merging_ratio": 0.5}})
    pasted = server.post("/sdapi/v1/img2img", json={**base, "infotext": "a\nSteps: 3, Seed: 9, Token merging ratio: 0.5"})
    field = server.post("/sdapi/v1/img2img", json={**base, "token_merging_ratio": 0.5})
    plain = server.post("/sdapi/v1/img2img", json=base)
    p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, init_images=[source_image()], prompt="a", width=64,
                                         height=64, steps=3, seed=9, sampler_name="Euler",
                                         override_settings={"token_merging_ratio": 0.5})
    expected = pixels(process_images(p).images[0])
    for r in (overridden, pasted):
        assert "Token merging ratio: 0.5" in json.loads(r.json()["info"])["infotexts"][0]
        assert np.array_equal(pixels(decode(r.json()["images"][0])), expected)
    assert "Token merging" not in field.json()["info"]
    assert np.array_equal(pixels(decode(field.json()["images"][0])), pixels(decode(plain.json()["images"][0])))
    assert not np.array_equal(pixels(decode(plain.json()["images"][0])), expected)
    bad = server.post("/sdapi/v1/img2img", json={**base, "override_settings": {"token_merging_ratio_img2img": 2}})
    assert bad.status_code == 422 and "token_merging_ratio_img2img" in bad.json()["detail"]


def test_override_settings_stay_when_not_restored_afterwards(server):
    base = {"init_images": [b64_image(source_image())], "width": 64, "height": 64, "steps": 2}
    assert server.post("/sdapi/v1/img2img", json={**base, "override_settings": {"CLIP_stop_at_last_layers": 2}}).ok
    assert server.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 1  # restored (the default)
    kept = server.post("/sdapi/v1/img2img", json={**base, "override_settings": {"CLIP_stop_at_last_layers": 2},
                                                   "override_settings_restore_afterwards": False})
    try:
        assert kept.status_code == 200, kept.text
        assert server.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
        later = json.loads(server.post("/sdapi/v1/img2img", json=base).json()["info"])["infotexts"][0]
        assert "Clip skip: 2" in later
    finally:
        server.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1})
    assert "Clip skip" not in json.loads(server.post("/sdapi/v1/img2img", json=base).json()["info"])["infotexts"][0]


def test_kept_overrides_are_settings_for_the_next_job(server):
    """Kept with ``override_settings_restore_afterwards: false``, an overridden ``token_merging_ratio`` is a setting
    for later jobs, not their override: their img2img ratio comes first (A1111's get_token_merging_ratio)."""
    base = {"init_images": [b64_image(source_image())], "width": 64, "height": 64, "steps": 2}
    ratio = re.compile(r"Token merging ratio: ([0-9.]+)")
    try:
        assert server.post("/sdapi/v1/options", json={"token_merging_ratio_img2img": 0.3}).ok
        kept = server.post("/sdapi/v1/img2img", json={**base, "override_settings": {"token_merging_ratio": 0.5},
                                                       "override_settings_restore_afterwards": False})
        assert ratio.findall(json.loads(kept.json()["info"])["infotexts"][0]) == ["0.5"]
        assert server.get("/sdapi/v1/options").json()["token_merging_ratio"] == 0.5
        later = json.loads(server.post("/sdapi/v1/img2img", json=base).json()["info"])["infotexts"][0]
        assert ratio.findall(later) == ["0.3"]
    finally:
        server.post("/sdapi/v1/options", json={"token_merging_ratio": 0, "token_merging_ratio_img2img": 0})


def test_listing_endpoints(server):
    samplers = server.get("/sdapi/v1/samplers").json()
    assert [s["name"] for s in samplers][:3] == ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE"] and len(samplers) == 20
    assert [s["label"] for s in server.get("/sdapi/v1/schedulers").json()][:3] == ["Automatic", "Uniform", "Karras"]
    titles = [m["title"] for m in server.get("/sdapi/v1/sd-models").json()]
    assert titles == ["tiny", "tiny-inpainting", "tiny-pix2pix"]
    assert server.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert server.get("/sdapi/v1/scripts").json() == {"txt2img": ["refiner", "soft inpainting"],
                                                      "img2img": ["loopback", "outpainting mk2", "poor man's outpainting",
                                                                  "prompt matrix", "prompts from file or textbox",
                                                                  "sd upscale", "x/y/z plot", "refiner",
                                                                  "soft inpainting"]}
    assert server.get("/sdapi/v1/memory").json()["ram"]["total"] > 0
    assert "ckpt_dir" in server.get("/sdapi/v1/cmd-flags").json()
    assert server.get("/internal/pending-tasks").json() == {"size": 0, "tasks": []}
    assert server.get("/openapi.json").json()["paths"]["/sdapi/v1/img2img"]


def test_options_get_and_set(server):
    options = server.get("/sdapi/v1/options").json()
    assert options["CLIP_stop_at_last_layers"] == 1
    assert options["sd_model_checkpoint"].split(" [")[0] in ("tiny", "retouch-tiny-v1.safetensors")  # before / after loading
    assert server.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 0}).status_code == 200
    bad = server.post("/sdapi/v1/options", json={"not_an_option": 1})
    assert bad.status_code == 422 and "not_an_option" in bad.json()["detail"]


def test_png_info(server):
    r = server.post("/sdapi/v1/img2img", json={"init_images": [b64_image(source_image())], "width": 64, "height": 64,
                                               "steps": 2, "prompt": "a cat, sitting"})
    info = server.post("/sdapi/v1/png-info", json={"image": r.json()["images"][0]}).json()
    assert info["info"].startswith("a cat, sitting") and info["parameters"]["Steps"] == "2"


def long_job(seed=1, **extra):
    return {"init_images": [b64_image(source_image(128, 128))], "width": 128, "height": 128, "steps": 400,
            "denoising_strength": 1.0, "seed": seed, "sampler_name": "Euler", **extra}


def test_progress_during_and_after_a_job(server):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", server.post("/sdapi/v1/img2img",
                                                                                json=long_job(force_task_id="t1"))))
    thread.start()
    seen, deadline = [], time.time() + 60
    while thread.is_alive() and time.time() < deadline:
        p = server.get("/sdapi/v1/progress").json()
        if p["state"]["job_count"]:
            seen.append(p)
            task = server.post("/internal/progress", json={"id_task": "t1"}).json()
            assert task["active"] is True or task["completed"] is True  # it may finish between the two calls
        time.sleep(0.2)
    thread.join()
    assert result["r"].status_code == 200
    steps = [p["state"]["sampling_step"] for p in seen]
    assert len(seen) >= 2 and steps == sorted(steps) and steps[-1] > steps[0]
    assert any(p["current_image"] for p in seen)  # live previews while sampling
    idle = server.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    assert server.post("/internal/progress", json={"id_task": "t1"}).json()["completed"] is True


def wait_until_running(server):
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.get("/sdapi/v1/progress").json()["state"]["sampling_step"] > 2:
            return
        time.sleep(0.1)
    raise AssertionError("the job never started")


def test_interrupt_returns_what_was_made(server):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", server.post("/sdapi/v1/img2img", json=long_job())))
    thread.start()
    wait_until_running(server)
    started = time.time()
    assert server.post("/sdapi/v1/interrupt").status_code == 200
    thread.join(60)
    assert time.time() - started < 30
    r = result["r"]
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    assert server.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_interrupt_by_task_id_leaves_other_jobs_alone(server):
    results = {}

    def run(name, seed):
        results[name] = server.post("/sdapi/v1/img2img", json=long_job(seed, force_task_id=name, steps=150))

    first = threading.Thread(target=run, args=("A", 1))
    first.start()
    wait_until_running(server)
    second = threading.Thread(target=run, args=("B", 2))
    second.start()
    time.sleep(0.5)
    assert server.post("/internal/progress", json={"id_task": "B"}).json()["queued"] is True
    assert server.post("/sdapi/v1/interrupt", json={"id_task": "nobody"}).status_code == 404
    assert server.post("/sdapi/v1/interrupt", json={"id_task": "B"}).status_code == 200
    first.join(120), second.join(120)
    assert results["B"].status_code == 409
    assert results["A"].status_code == 200 and len(results["A"].json()["images"]) == 1


def test_four_concurrent_clients(server, bundled_tiny):
    results = {}

    def run(seed):
        results[seed] = server.post("/sdapi/v1/img2img", json={
            "init_images": [b64_image(source_image())], "width": 64, "height": 64, "steps": 6, "seed": seed,
            "sampler_name": "Euler a", "prompt": f"cat {seed}"})

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for seed in range(4):
        assert results[seed].status_code == 200
        p = StableDiffusionProcessingImg2Img(sd_model=bundled_tiny, init_images=[source_image()], width=64, height=64,
                                             steps=6, seed=seed, sampler_name="Euler a", prompt=f"cat {seed}")
        assert np.array_equal(pixels(decode(results[seed].json()["images"][0])), pixels(process_images(p).images[0]))


def test_full_queue_is_503(tmp_path_factory):
    server = start(tmp_path_factory, "--ckpt", "tiny", "--max-queue", "1")
    try:
        threads = [threading.Thread(target=lambda s=s: server.post("/sdapi/v1/img2img", json=long_job(s, steps=120)))
                   for s in range(2)]
        threads[0].start()
        wait_until_running(server)
        threads[1].start()
        time.sleep(0.5)
        r = server.post("/sdapi/v1/img2img", json=long_job(3, steps=5))
        assert r.status_code == 503 and r.headers["Retry-After"]
        server.post("/sdapi/v1/interrupt")
        for t in threads:
            t.join(120)
    finally:
        server.stop()


def test_auth(tmp_path_factory):
    server = start(tmp_path_factory, "--api-auth", "alice:secret,bob:hunter2", auth=("alice", "wrong"))
    try:
        r = server.get("/sdapi/v1/samplers")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Basic"
        assert server.get("/openapi.json").status_code == 401
        server.auth = ("bob", "hunter2")
        assert server.get("/sdapi/v1/samplers").status_code == 200
    finally:
        server.stop()


def test_image_urls_are_refused_unless_allowed(server, tmp_path_factory):
    base = {"width": 64, "height": 64, "steps": 2}
    r = server.post("/sdapi/v1/img2img", json={**base, "init_images": ["http://example.com/a.png"]})
    assert r.status_code == 422 and "init_images[0]: image URLs are not accepted" in r.json()["detail"]
    allowing = start(tmp_path_factory, "--allow-image-urls")
    try:
        r = allowing.post("/sdapi/v1/img2img", json={**base, "init_images": [server.url + "/internal/ping"]})
        assert r.status_code == 422 and "local or private address" in r.json()["detail"]
    finally:
        allowing.stop()


def test_webuiapi_client_works_unmodified(server):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=4)
    api.util_wait_for_ready(check_interval=0.2)
    assert "Euler a" in [s["name"] for s in api.get_samplers()]
    assert any(m["model_name"] == "tiny" for m in api.get_sd_models())
    result = api.img2img(images=[source_image()], prompt="a cat", width=64, height=64, seed=3, cfg_scale=7)
    assert result.image.size == (64, 64) and result.info["seed"] == 3
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    masked = api.img2img(images=[source_image()], mask_image=mask, prompt="a cat", width=64, height=64, seed=3,
                         inpaint_full_res=False)
    assert "Mask blur: 4" in masked.info["infotexts"][0]
    outside = np.ones((64, 64), bool)
    outside[16 - 12:48 + 12, 16 - 12:48 + 12] = False  # beyond the blurred (σ 4 → 10 px) edge
    assert np.array_equal(pixels(masked.image)[outside], pixels(source_image())[outside])
    api.interrupt()
