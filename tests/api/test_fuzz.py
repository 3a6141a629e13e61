"""Property-based fuzzing of the HTTP API (bounded in count): whatever a client sends, never a 5xx,
the server keeps serving, and its memory comes back."""

import base64
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.api.conftest import b64_image, start
from tests.api.test_hostile import post_raw
from tests.pipeline.helpers import source_image

GOOD = b64_image(source_image())
FIELDS = ["prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength", "seed_resize_from_h",
          "seed_resize_from_w", "sampler_name", "scheduler", "batch_size", "n_iter", "steps", "cfg_scale", "width",
          "height", "restore_faces", "tiling", "eta", "denoising_strength", "s_min_uncond", "s_churn", "s_noise",
          "override_settings", "override_settings_restore_afterwards", "refiner_checkpoint", "disable_extra_networks",
          "comments", "init_images", "resize_mode", "image_cfg_scale", "mask", "mask_blur_x", "mask_blur", "mask_round",
          "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert",
          "initial_noise_multiplier", "latent_mask", "force_task_id", "sampler_index", "include_init_images",
          "script_name", "script_args", "send_images", "save_images", "alwayson_scripts", "infotext"]
OPTIONS = ["CLIP_stop_at_last_layers", "eta_noise_seed_delta", "emphasis", "randn_source", "img2img_background_color",
           "sd_model_checkpoint", "jpeg_quality", "ui_reorder_list", "samples_format", "not_an_option"]


def _png(width: int, height: int, mode: str) -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# JSON values, including what Python's json writes but JSON forbids (NaN, ±Infinity) and lone surrogates
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["\ud800", "Euler a", "Karras", "-1", "", "#zzz", "tiny", "(a:1.2)", "[a:b:0.5]", "NaN",
                     "data:image/png", "http://127.0.0.1/x.png", "a\nSteps: x, Seed: \"", GOOD, "dup",
                     "[" * 600 + "a" + "]" * 600, "(a " * 2000, "BREAK" + " " * 5000, 8192, 10**40, 2**63]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                            inner, max_size=4),
                      max_leaves=8)
EPS = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n").decode()
images = st.one_of(st.just(GOOD), st.builds(_png, st.integers(1, 80), st.integers(1, 80),
                                            st.sampled_from(["RGB", "RGBA", "L", "P", "I;16", "1"])),
                   st.just(_png(4096, 4096, "L")), st.just(EPS),  # a small body that decodes huge; Ghostscript bait
                   st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), values)


@st.composite
def requests(draw):
    body = {"init_images": [draw(images)], "width": 64, "height": 64, "steps": 2}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        body[name] = draw(values)
    if draw(st.booleans()):
        body["override_settings"] = draw(st.dictionaries(st.sampled_from(OPTIONS), values, max_size=3))
    if draw(st.booleans()):
        body["mask"] = draw(images)
    return body


def encode(body) -> str:
    return json.dumps(body, allow_nan=True)  # keeps NaN/Infinity and "\ud800" escapes as sent


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    server = start(tmp_path_factory, "--ckpt", "tiny", "--max-job-steps", "40", "--max-images", "4",
                   "--max-request-pixels", str(2**22))
    assert server.post("/sdapi/v1/img2img", json={"init_images": [GOOD], "width": 64, "height": 64,
                                                  "steps": 2}).status_code == 200
    server.baseline = server.get("/sdapi/v1/memory").json()["ram"]["used"]
    yield server
    server.stop()


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=requests())
def test_img2img_never_answers_5xx(fuzzed, body):
    r = post_raw(fuzzed, "/sdapi/v1/img2img", encode(body))
    assert r.status_code < 500, r.text[:500]
    assert isinstance(r.json(), dict)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(path=st.sampled_from(["/sdapi/v1/options", "/sdapi/v1/png-info", "/internal/progress", "/sdapi/v1/interrupt"]),
       body=st.one_of(values, st.dictionaries(st.sampled_from(OPTIONS + ["image", "id_task", "live_preview"]),
                                              values, max_size=4)))
def test_other_routes_never_answer_5xx(fuzzed, path, body):
    r = post_raw(fuzzed, path, encode(body))
    assert r.status_code < 500, r.text[:500]
    assert fuzzed.get("/sdapi/v1/options").status_code == 200  # never poisoned


def test_after_fuzzing_the_server_serves_and_memory_is_back(fuzzed):
    assert fuzzed.get("/internal/ping").status_code == 200
    r = fuzzed.post("/sdapi/v1/img2img", json={"init_images": [GOOD], "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    used = fuzzed.get("/sdapi/v1/memory").json()["ram"]["used"]
    assert used - fuzzed.baseline < 100 * 2**20, (used - fuzzed.baseline) / 2**20
