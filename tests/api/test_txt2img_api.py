"""``POST /sdapi/v1/txt2img``, the refiner in img2img, ``/upscalers`` and ``/latent-upscale-modes`` on a real
server: A1111's pixels, infotexts and answers."""

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import b64_file, start
from tests.conftest import MODELS, ORACLE, need_shared
from tests.host import bound
from tests.pipeline.helpers import pixels


@pytest.fixture(scope="module")
def t2i_server(tmp_path_factory):
    need_shared()
    s = start(tmp_path_factory, "--ckpt", str(MODELS / "tiny-sd1.safetensors"), "--ckpt-dir", str(MODELS),
              "--esrgan-models-path", str(MODELS / "ESRGAN"), "--max-pixels", str(256 * 256),
              "--outdir", str(tmp_path_factory.mktemp("server-out")))
    yield s
    s.stop()


def _case(case):
    spec = json.loads((ORACLE / "cases" / f"{case}.json").read_text())
    request = dict(spec["request"])
    if "init_images" in request:
        request["init_images"] = [b64_file(ORACLE / "inputs" / n) for n in request["init_images"]]
    return spec["endpoint"], request


def _image(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.mark.parametrize("case", ["250", "255", "260", "263", "265", "270", "273", "275"])
def test_a1111_requests(t2i_server, case):
    """The oracle's own requests, sent as A1111 received them."""
    endpoint, request = _case(case)
    r = t2i_server.post(endpoint, json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    theirs = json.loads((ORACLE / "cases" / f"{case}_info.json").read_text())
    assert len(body["images"]) == len(theirs["infotexts"])
    for i, b64 in enumerate(body["images"]):
        ours = pixels(_image(b64))
        reference = pixels(Image.open(ORACLE / "cases" / f"{case}_out{i}.png"))
        tolerance = 12 if case == "265" else bound(2, 4)  # see tests/pipeline/test_txt2img.py::test_hires_with_a_model_upscaler
        assert ours.shape == reference.shape and np.abs(ours - reference).max() <= tolerance
        assert info["infotexts"][i].rsplit("Version", 1)[0] == theirs["infotexts"][i].rsplit("Version", 1)[0]
    for key in ("width", "height", "seed", "all_seeds", "denoising_strength", "extra_generation_params",
                "sampler_name", "steps", "sd_model_name", "is_using_inpainting_conditioning"):
        assert info[key] == theirs[key], key
    if endpoint.endswith("txt2img"):
        assert body["parameters"]["enable_hr"] == request["enable_hr"]


def test_upscaler_and_latent_mode_listings(t2i_server):
    upscalers = t2i_server.get("/sdapi/v1/upscalers").json()
    assert [u["name"] for u in upscalers] == ["None", "Lanczos", "Nearest", "DAT x2", "DAT x3", "DAT x4", "LDSR",
                                              "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "ScuNET GAN", "ScuNET PSNR",
                                              "SwinIR 4x", "tiny-esrgan-x4"]
    esrgan = upscalers[-1]
    assert esrgan["model_path"].endswith("tiny-esrgan-x4.pth") and esrgan["scale"] == 4
    assert upscalers[7]["model_path"].startswith("https://")  # listed as A1111 lists it; not on disk
    modes = t2i_server.get("/sdapi/v1/latent-upscale-modes").json()
    assert [m["name"] for m in modes] == ["Latent", "Latent (antialiased)", "Latent (bicubic)",
                                          "Latent (bicubic antialiased)", "Latent (nearest)", "Latent (nearest-exact)"]


def test_bad_requests_are_refused_before_any_work(t2i_server):
    base = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "enable_hr": True}
    r = t2i_server.post("/sdapi/v1/txt2img", json={**base, "hr_upscaler": "Bicubic"})
    assert r.status_code == 422 and "could not find upscaler named 'Bicubic'" in r.json()["detail"]
    assert "tiny-esrgan-x4" in r.json()["detail"]
    r = t2i_server.post("/sdapi/v1/txt2img", json={**base, "hr_upscaler": "SwinIR 4x"})
    assert r.status_code == 422 and "--swinir-models-path" in r.json()["detail"]
    r = t2i_server.post("/sdapi/v1/txt2img", json={**base, "refiner_checkpoint": "nope", "refiner_switch_at": 0.5})
    assert r.status_code == 422 and r.json()["detail"].startswith("refiner_checkpoint: could not find checkpoint")
    r = t2i_server.post("/sdapi/v1/txt2img", json={**base, "hr_checkpoint_name": "nope"})
    assert r.status_code == 422 and r.json()["detail"].startswith("hr_checkpoint_name: could not find checkpoint")
    r = t2i_server.post("/sdapi/v1/txt2img", json={**base, "hr_scale": 8})  # 512² > --max-pixels 256²
    assert r.status_code == 413 and "hires size 512x512" in r.json()["detail"]
    r = t2i_server.post("/sdapi/v1/txt2img", json={**base, "script_name": "x/y/z plot"})
    assert r.status_code == 422 and "Script 'x/y/z plot' not found" in r.json()["detail"]
    r = t2i_server.post("/sdapi/v1/img2img", json={"init_images": [b64_file(ORACLE / "inputs" / "src_a_64x64.png")],
                                                   "refiner_checkpoint": "tiny-sdxl", "refiner_switch_at": 0.5,
                                                   "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 422 and "another latent space" in r.json()["detail"]
    assert t2i_server.get("/internal/ping").status_code == 200


def test_infotext_field_turns_the_hires_fix_on(t2i_server):
    _, request = _case("260")
    infotext = (ORACLE / "cases" / "260_infotext0.txt").read_text()
    r = t2i_server.post("/sdapi/v1/txt2img", json={"infotext": infotext})
    assert r.status_code == 200, r.text
    ours = pixels(_image(r.json()["images"][0]))
    assert np.abs(ours - pixels(Image.open(ORACLE / "cases" / "260_out0.png"))).max() <= 2


def test_interrupt_in_the_second_pass(t2i_server):
    """An interrupt lands in the hires pass: the answer is the partial picture at the hires size, and the server
    goes on serving."""
    request = {"prompt": "a cat", "width": 64, "height": 64, "steps": 40, "enable_hr": True, "hr_scale": 2,
               "hr_upscaler": "Latent", "denoising_strength": 0.9, "force_task_id": "hires-interrupt", "seed": 1}
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(r=t2i_server.post("/sdapi/v1/txt2img", json=request)))
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        state = t2i_server.post("/internal/progress", json={"id_task": "hires-interrupt"}).json()
        if state.get("active") and state.get("progress", 0) > 0.6:  # past the first pass (job 2 of 2)
            break
        time.sleep(0.05)
    t2i_server.post("/sdapi/v1/interrupt", json={"id_task": "hires-interrupt"})
    thread.join(120)
    r = answer["r"]
    assert r.status_code == 200, r.text
    partial = _image(r.json()["images"][0])
    assert partial.size == (128, 128)
    assert json.loads(r.json()["info"])["extra_generation_params"]["Hires upscale"] == 2.0
    whole = t2i_server.post("/sdapi/v1/txt2img", json={**request, "force_task_id": "hires-whole"})
    assert not np.array_equal(pixels(partial), pixels(_image(whole.json()["images"][0])))  # it was cut short


def test_webuiapi_txt2img_unmodified(t2i_server):
    """The webuiapi client's txt2img — plain, with its hires-fix arguments (its hires checkpoint too), and with the
    refiner — as a bot calls it."""
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=t2i_server.port, sampler="Euler", steps=3)
    result = api.txt2img(prompt="a cat", width=64, height=64, seed=4, enable_hr=True, hr_scale=1.5,
                         hr_upscaler=webuiapi.HiResUpscaler.Latent, denoising_strength=0.5,
                         hr_checkpoint_name="tiny-sd1-b")
    assert result.image.size == (96, 96) and result.info["seed"] == 4
    text = result.info["infotexts"][0]
    assert "Hires checkpoint: tiny-sd1-b [9a6d492510]" in text and "Hires upscale: 1.5" in text
    assert [u["name"] for u in api.get_upscalers()][:3] == ["None", "Lanczos", "Nearest"]
    plain = api.txt2img(prompt="a cat", width=64, height=64, seed=4)
    assert plain.image.size == (64, 64) and "Hires" not in plain.info["infotexts"][0]
    # webuiapi has no refiner argument: clients send A1111's Refiner script (enabled, checkpoint, switch at)
    refined = api.txt2img(prompt="a cat", width=64, height=64, seed=4,
                          alwayson_scripts={"Refiner": {"args": [True, "tiny-sd1-b", 0.5]}})
    assert "Refiner: tiny-sd1-b [9a6d492510], Refiner switch at: 0.5" in refined.info["infotexts"][0]
    assert not np.array_equal(pixels(plain.image), pixels(refined.image))
    off = api.txt2img(prompt="a cat", width=64, height=64, seed=4,
                      alwayson_scripts={"Refiner": {"args": [False, "tiny-sd1-b", 0.5]}})
    assert np.array_equal(pixels(plain.image), pixels(off.image))
