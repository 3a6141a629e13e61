"""Extra networks and soft inpainting over HTTP: A1111's routes, shapes and errors."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from retouch import load_model
from retouch.networks.synthetic import write_random_network
from retouch.outputs import encode_image
from tests.api.conftest import b64_image, start
from tests.api.test_server import decode, oracle_request
from tests.conftest import ORACLE
from tests.pipeline.helpers import pixels, source_image


@pytest.mark.parametrize("case", ["099", "127", "137", "141"])
def test_oracle_cases(oracle_server, case):
    _, api = oracle_request(case)
    r = oracle_server.post("/sdapi/v1/img2img", json=api)
    assert r.status_code == 200, r.text
    image = decode(r.json()["images"][0])
    reference = pixels(Image.open(ORACLE / "cases" / f"{case}_out0.png"))
    assert np.abs(pixels(image) - reference).max() <= 2
    expected = (ORACLE / "cases" / f"{case}_infotext0.txt").read_text()
    assert image.info["parameters"].rsplit("Version", 1)[0] == expected.rsplit("Version", 1)[0]


def test_loras_and_embeddings_in_a1111s_shapes(oracle_server):
    loras = oracle_server.get("/sdapi/v1/loras").json()
    assert [entry["name"] for entry in loras] == ["tiny_locon", "tiny_loha", "tiny_lokr", "tiny_lora_alias",
                                                  "tiny_lora_kohya"]
    by_name = {entry["name"]: entry for entry in loras}
    assert set(by_name["tiny_loha"]) == {"name", "alias", "path", "metadata"}
    assert by_name["tiny_lora_alias"]["alias"] == "tinystyle"
    assert by_name["tiny_lokr"]["metadata"]["ss_network_args"] == {"algo": "lokr", "factor": "4"}  # JSON decoded
    assert by_name["tiny_lora_kohya"]["path"].endswith("lora/tiny_lora_kohya.safetensors")
    embeddings = oracle_server.get("/sdapi/v1/embeddings").json()
    assert embeddings["skipped"] == {}
    assert embeddings["loaded"] == {
        "tiny-emb-one": {"step": 500, "sd_checkpoint": "0f6bfda938", "sd_checkpoint_name": "tiny-sd1", "shape": 32,
                         "vectors": 1},
        "tiny-emb-st": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32, "vectors": 2},
        "tiny-emb-three": {"step": 1500, "sd_checkpoint": "0f6bfda938", "sd_checkpoint_name": "tiny-sd1", "shape": 32,
                           "vectors": 3}}


def test_alias_via_the_api(oracle_server):
    _, api = oracle_request("099")
    api["prompt"] = "a red cat sitting on a blue mat <lora:tinystyle:0.9>"
    info = json.loads(oracle_server.post("/sdapi/v1/img2img", json=api).json()["info"])
    assert 'Lora hashes: "tinystyle: 4f2a2398be60"' in info["infotexts"][0]


def test_pasted_infotext_finds_renamed_networks_by_hash(oracle_server):
    text = ("a cat <lora:my_old_name:0.7>\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, "
            'Lora hashes: "my_old_name: ff23b23bd6a6"')
    encoded = base64.b64encode(encode_image(Image.new("RGB", (8, 8)), "png", texts={"parameters": text})).decode()
    parameters = oracle_server.post("/sdapi/v1/png-info", json={"image": encoded}).json()["parameters"]
    assert parameters["Prompt"] == "a cat <lora:tiny_lora_kohya:0.7>"


def test_soft_inpainting_from_a_pasted_infotext(oracle_server):
    _, api = oracle_request("141")
    direct = oracle_server.post("/sdapi/v1/img2img", json=api).json()
    text = json.loads(direct["info"])["infotexts"][0]
    pasted = {k: v for k, v in api.items() if k not in ("alwayson_scripts", "prompt", "seed", "steps", "cfg_scale",
                                                         "sampler_name", "denoising_strength")}
    pasted["infotext"] = text
    again = oracle_server.post("/sdapi/v1/img2img", json=pasted)
    assert again.status_code == 200, again.text
    assert np.array_equal(pixels(decode(again.json()["images"][0])), pixels(decode(direct["images"][0])))


@pytest.mark.parametrize("scripts, status, detail", [
    ({"controlnet": {"args": []}}, 422, "always on script controlnet not found"),
    ({"soft inpainting": {"args": [True, 99]}}, 422, "schedule_bias must be in [0, 8], got 99"),
    ({"soft inpainting": {"args": "yes"}}, 422, "args must be a list"),
])
def test_bad_scripts_are_refused(oracle_server, scripts, status, detail):
    _, api = oracle_request("137")
    api["alwayson_scripts"] = scripts
    r = oracle_server.post("/sdapi/v1/img2img", json=api)
    assert r.status_code == status and detail in r.json()["detail"]


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory):
    """A server on the bundled tiny model with folders the tests write to."""
    base = tmp_path_factory.mktemp("api-networks")
    (base / "lora").mkdir()
    (base / "emb").mkdir()
    s = start(tmp_path_factory, "--ckpt", "tiny", "--lora-dir", str(base / "lora"), "--embeddings-dir",
              str(base / "emb"))
    s.folders = base
    yield s
    s.stop()


def small_request(prompt):
    return {"init_images": [b64_image(source_image())], "prompt": prompt, "width": 64, "height": 64, "steps": 4,
            "seed": 3}


def test_refresh_routes_and_new_files(lora_server, tmp_path):
    assert lora_server.get("/sdapi/v1/loras").json() == []
    layers = load_model("tiny").extra_networks.layers
    write_random_network(tmp_path / "fresh.safetensors", layers, scale=0.3)
    shutil.copy(tmp_path / "fresh.safetensors", lora_server.folders / "lora" / "fresh.safetensors")
    assert lora_server.get("/sdapi/v1/loras").json() == []  # listed after a refresh, as A1111
    # ... but a job that names it finds it (A1111 rescans for an unknown name)
    r = lora_server.post("/sdapi/v1/img2img", json=small_request("a cat <lora:fresh:1>"))
    assert "Lora hashes" in json.loads(r.json()["info"])["infotexts"][0]
    assert lora_server.post("/sdapi/v1/refresh-loras").json() is None
    assert [e["name"] for e in lora_server.get("/sdapi/v1/loras").json()] == ["fresh"]
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}}, lora_server.folders / "emb" / "newemb.pt")
    assert lora_server.post("/sdapi/v1/refresh-embeddings").json() is None
    assert list(lora_server.get("/sdapi/v1/embeddings").json()["loaded"]) == ["newemb"]


def test_a_broken_network_is_a_422_naming_the_file_and_the_server_carries_on(lora_server):
    (lora_server.folders / "lora" / "damaged.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    r = lora_server.post("/sdapi/v1/img2img", json=small_request("a cat <lora:damaged:1>"))
    assert r.status_code == 422
    assert "damaged" in r.json()["detail"] and r.json()["error"] == "ValueError"
    ok = lora_server.post("/sdapi/v1/img2img", json=small_request("a cat"))
    assert ok.status_code == 200
    (lora_server.folders / "lora" / "damaged.safetensors").unlink()
