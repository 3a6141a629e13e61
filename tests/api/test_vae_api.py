"""Separate VAEs over HTTP (A1111 ``sd_vae``): listed, chosen per request or in the options, resolved as A1111
resolves "Automatic", "None" and a name, and refused by name when unknown."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from retouch import load_model
from retouch.processing import StableDiffusionProcessingImg2Img, process_images
from tests.api.conftest import b64_image, start
from tests.api.test_server import decode
from tests.conftest import MODELS, need_shared
from tests.pipeline.helpers import pixels, source_image

JOB = {"prompt": "a red cat", "steps": 3, "denoising_strength": 0.6, "seed": 7, "width": 64, "height": 64,
       "sampler_name": "Euler"}


def write_vae(path, change) -> None:
    """tiny-sd1's VAE as a separate file (LDM keys, no prefix, as A1111's VAE files), with one tensor changed."""
    state = {k.removeprefix("first_stage_model."): v for k, v in load_file(MODELS / "tiny-sd1.safetensors").items()
             if k.startswith("first_stage_model.")}
    state[change] = state[change] * 0.5 + 0.1
    save_file(state, path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    need_shared()
    ckpts, vaes = tmp_path_factory.mktemp("ckpts"), tmp_path_factory.mktemp("vaes")
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(MODELS / f"tiny-sd1{suffix}", ckpts / f"tiny-sd1{suffix}")
    (ckpts / "tiny-clip-vit-large-patch14").symlink_to(MODELS / "tiny-clip-vit-large-patch14")  # named by the yaml
    write_vae(ckpts / "tiny-sd1.vae.safetensors", "decoder.conv_out.weight")  # "Automatic" picks this one
    write_vae(vaes / "other.safetensors", "decoder.conv_out.bias")
    return ckpts, vaes


@pytest.fixture(scope="module")
def vae_server(tmp_path_factory, folders):
    ckpts, vaes = folders
    s = start(tmp_path_factory, "--ckpt", "tiny-sd1.safetensors", "--ckpt-dir", str(ckpts), "--vae-dir", str(vaes))
    yield s
    s.stop()


def library_pixels(ckpt, vae=None):
    model = load_model(ckpt, vae=vae)
    p = StableDiffusionProcessingImg2Img(sd_model=model, init_images=[source_image(64, 64)], **JOB)
    return pixels(process_images(p).images[0])


def served(server, **override_settings):
    r = server.post("/sdapi/v1/img2img", json={**JOB, "init_images": [b64_image(source_image(64, 64))],
                                               "override_settings": override_settings})
    assert r.status_code == 200, r.text
    image = decode(r.json()["images"][0])
    return pixels(image), image.info["parameters"]


def test_vaes_are_listed_and_not_taken_for_checkpoints(vae_server, folders):
    ckpts, vaes = folders
    listed = vae_server.get("/sdapi/v1/sd-vae").json()
    assert listed == [{"model_name": "other.safetensors", "filename": str(vaes / "other.safetensors")},
                      {"model_name": "tiny-sd1.vae.safetensors", "filename": str(ckpts / "tiny-sd1.vae.safetensors")}]
    assert [m["model_name"] for m in vae_server.get("/sdapi/v1/sd-models").json()] == ["tiny-sd1"]
    assert vae_server.get("/sdapi/v1/cmd-flags").json()["vae_dir"] == str(vaes)


def test_each_request_gets_the_vae_it_names_and_automatic_finds_the_checkpoints_own(vae_server, folders):
    ckpts, vaes = folders
    ckpt = ckpts / "tiny-sd1.safetensors"
    own, near, other = (library_pixels(ckpt, vae) for vae in (None, ckpts / "tiny-sd1.vae.safetensors",
                                                               vaes / "other.safetensors"))
    assert np.abs(own - near).max() > 10 and np.abs(own - other).max() > 10  # the three VAEs differ visibly
    # in an order that switches the VAE on every request, and back to the checkpoint's own
    for setting, expected, name in (("other.safetensors", other, "other.safetensors"), ("None", own, None),
                                    ("Automatic", near, "tiny-sd1.vae.safetensors"), ("None", own, None)):
        got, infotext = served(vae_server, sd_vae=setting)
        assert np.array_equal(got, expected), setting
        assert (f"VAE: {name}" in infotext) == (name is not None), infotext
    got, _ = served(vae_server)  # the server's default setting is "Automatic"
    assert np.array_equal(got, near)


def test_the_options_set_the_vae_for_later_requests(vae_server, folders):
    ckpts, vaes = folders
    other = library_pixels(ckpts / "tiny-sd1.safetensors", vaes / "other.safetensors")
    assert vae_server.post("/sdapi/v1/options", json={"sd_vae": "other.safetensors"}).status_code == 200
    try:
        assert vae_server.get("/sdapi/v1/options").json()["sd_vae"] == "other.safetensors"
        assert np.array_equal(served(vae_server)[0], other)
    finally:
        vae_server.post("/sdapi/v1/options", json={"sd_vae": "Automatic"})


@pytest.mark.parametrize("where", ["request", "options"])
def test_an_unknown_vae_is_refused_by_name(vae_server, where):
    if where == "request":
        r = vae_server.post("/sdapi/v1/img2img", json={**JOB, "init_images": [b64_image(source_image(64, 64))],
                                                       "override_settings": {"sd_vae": "missing.safetensors"}})
    else:
        r = vae_server.post("/sdapi/v1/options", json={"sd_vae": "missing.safetensors"})
    assert r.status_code == 422
    assert "sd_vae: unknown VAE 'missing.safetensors'" in r.text and "other.safetensors" in r.text
    assert vae_server.get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"
