"""A1111's Extras upscaling over HTTP: ``/sdapi/v1/extra-single-image`` and ``/extra-batch-images``."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import b64_file, start
from tests.conftest import MODELS, ORACLE, need_shared
from tests.host import assert_oracle_pixels
from tests.pipeline.helpers import pixels


@pytest.fixture(scope="module")
def extras_server(tmp_path_factory):
    need_shared()
    s = start(tmp_path_factory, "--ckpt", "tiny", "--esrgan-models-path", str(MODELS / "ESRGAN"),
              "--max-pixels", str(512 * 512))
    yield s
    s.stop()


def _image(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.mark.parametrize("case", ["240", "242"])
def test_a1111_extras_requests(extras_server, case):
    """Lanczos (240) and the tiny ESRGAN (242) ×2: every pixel and the html_info as A1111's."""
    request = json.loads((ORACLE / "cases" / f"{case}.json").read_text())["request"]
    request["image"] = b64_file(ORACLE / "inputs" / request["image"])
    r = extras_server.post("/sdapi/v1/extra-single-image", json=request)
    assert r.status_code == 200, r.text
    assert r.json()["html_info"] == (ORACLE / "cases" / f"{case}_html_info.txt").read_text()
    ours = _image(r.json()["image"])
    assert_oracle_pixels(pixels(ours), pixels(Image.open(ORACLE / "cases" / f"{case}_out0.png")))
    assert ours.info["postprocessing"].startswith("Postprocess upscale by: 2.0")


def test_scale_to_crop_second_upscaler_and_batch(extras_server):
    source = b64_file(ORACLE / "inputs" / "src_a_64x64.png")
    r = extras_server.post("/sdapi/v1/extra-batch-images", json={
        "resize_mode": 1, "upscaling_resize_w": 160, "upscaling_resize_h": 96, "upscaling_crop": True,
        "upscaler_1": "tiny-esrgan-x4", "upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.5,
        "imageList": [{"data": source, "name": "a.png"}, {"data": source, "name": "b.png"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["html_info"] == ("<p>Postprocess upscale to: 160x96, Postprocess crop to: 160x96, Postprocess "
                                 "upscaler: tiny-esrgan-x4, Postprocess upscaler 2: Nearest</p>")
    first, second = (_image(b) for b in body["images"])
    assert first.size == (160, 96) and np.array_equal(pixels(first), pixels(second))
    none = extras_server.post("/sdapi/v1/extra-single-image", json={"image": source, "upscaler_1": "None"}).json()
    assert none["html_info"] == "<p></p>"
    assert np.array_equal(pixels(_image(none["image"])), pixels(Image.open(ORACLE / "inputs" / "src_a_64x64.png")))


def test_bad_extras_requests(extras_server):
    source = b64_file(ORACLE / "inputs" / "src_a_64x64.png")
    cases = [({"gfpgan_visibility": 0.5}, 422, "gfpgan_visibility: face restoration"),
             ({"codeformer_visibility": 1}, 422, "codeformer_visibility: face restoration"),
             ({"upscaler_1": "Bicubic"}, 422, "upscaler_1: could not find upscaler named 'Bicubic'"),
             ({"upscaler_1": "Lanczos", "upscaler_2": "R-ESRGAN 4x+", "extras_upscaler_2_visibility": 0.5}, 422,
              "upscaler_2: the model file of R-ESRGAN 4x+ is not on disk"),
             ({"upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 600, "upscaling_resize_h": 600}, 413,
              "upscaled image would be 600x600"),
             ({"upscaler_1": "Lanczos", "upscaling_resize": 9}, 422, "upscaling_resize must be above 0 and at most 8"),
             ({"upscaler_1": "Lanczos", "upscaling_resize": 0}, 422, "upscaling_resize must be above 0")]
    for extra, status, detail in cases:
        r = extras_server.post("/sdapi/v1/extra-single-image", json={"image": source, **extra})
        assert r.status_code == status and detail in r.json()["detail"], (extra, r.text)
    r = extras_server.post("/sdapi/v1/extra-batch-images", json={"imageList": []})
    assert r.status_code == 422


def test_webuiapi_extra_single_image(extras_server):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=extras_server.port)
    source = Image.open(ORACLE / "inputs" / "src_a_64x64.png")
    result = api.extra_single_image(image=source, upscaler_1="tiny-esrgan-x4", upscaling_resize=2)
    assert result.image.size == (128, 128)
    assert_oracle_pixels(pixels(result.image), pixels(Image.open(ORACLE / "cases" / "242_out0.png")))
