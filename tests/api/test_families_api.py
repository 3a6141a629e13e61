"""SDXL and SD2 over HTTP: the reference cases through one server that switches checkpoints per request."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.api.test_server import decode, oracle_request
from tests.conftest import MODELS, ORACLE
from tests.pipeline.helpers import pixels

# Alternating families, so that each request switches the loaded checkpoint (SD1 → SDXL → SD2 → …).
CASES = ["150", "002", "182", "186", "161", "014", "193"]


def test_reference_cases_switching_families(oracle_server):
    for case in CASES:
        _, api = oracle_request(case)
        r = oracle_server.post("/sdapi/v1/img2img", json=api)
        assert r.status_code == 200, (case, r.text)
        image = decode(r.json()["images"][0])
        reference = pixels(Image.open(ORACLE / "cases" / f"{case}_out0.png"))
        assert np.abs(pixels(image) - reference).max() <= 2, case
        expected = (ORACLE / "cases" / f"{case}_infotext0.txt").read_text()
        assert image.info["parameters"].rsplit("Version", 1)[0] == expected.rsplit("Version", 1)[0], case


def test_sd_models_lists_every_family_with_a1111s_fields(oracle_server):
    for name in ("tiny-sd1", "tiny-sd1-inpainting", "tiny-sdxl", "tiny-sdxl-inpainting", "tiny-sd2-v",
                 "tiny-sd2-inpainting"):  # hashes are known once a checkpoint was loaded (as in A1111)
        _, api = oracle_request("150")
        api.update(steps=1, override_settings={"sd_model_checkpoint": name})
        r = oracle_server.post("/sdapi/v1/img2img", json=api)
        assert r.status_code == 200, r.text
        assert f"Model: {name}," in r.json()["info"]
    models = {m["model_name"]: m for m in oracle_server.get("/sdapi/v1/sd-models").json()}
    expected = {"tiny-sd1": "0f6bfda938", "tiny-sd1-inpainting": "db38ebb77f", "tiny-sdxl": "e79b6c5b78",
                "tiny-sdxl-inpainting": "6dbd5a4dbb", "tiny-sd2-v": "0049c4795b", "tiny-sd2-inpainting": "faf1edf869"}
    assert set(expected) <= set(models)
    for name, short_hash in expected.items():
        entry = models[name]
        assert set(entry) == {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert entry["hash"] == short_hash and entry["sha256"].startswith(short_hash)
        assert entry["title"] == f"{name}.safetensors [{short_hash}]"
        assert entry["filename"] == str(MODELS / f"{name}.safetensors")
        assert entry["config"] == str(MODELS / f"{name}.yaml")


def test_a_refiner_on_its_own_checkpoint_and_a_lone_switch_point_change_nothing(oracle_server):
    """A1111 never switches to the checkpoint it is on (SDXL refining itself: the plain job, no infotext key), and
    ``refiner_switch_at`` without a refiner does nothing; an SD1 refiner for SDXL is refused (another latent space)."""
    _, api = oracle_request("150")
    plain = oracle_server.post("/sdapi/v1/img2img", json=api).json()
    same = oracle_server.post("/sdapi/v1/img2img", json={**api, "refiner_checkpoint": "tiny-sdxl",
                                                         "refiner_switch_at": 0.5}).json()
    switched = oracle_server.post("/sdapi/v1/img2img", json={**api, "refiner_switch_at": 0.5}).json()
    for other in (same, switched):
        assert np.array_equal(pixels(decode(plain["images"][0])), pixels(decode(other["images"][0])))
    assert "Refiner" not in same["info"]
    r = oracle_server.post("/sdapi/v1/img2img", json={**api, "refiner_checkpoint": "tiny-sd1", "refiner_switch_at": 0.5})
    assert r.status_code == 422 and r.json()["detail"].startswith("refiner_checkpoint: tiny-sd1 works in another"), r.text
