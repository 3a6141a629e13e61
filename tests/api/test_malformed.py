"""Malformed requests: each gets a 4xx with a useful message; the server keeps serving, memory steady."""

import base64
import struct
import zlib

from tests.api.conftest import b64_image
from tests.pipeline.helpers import source_image

GOOD = b64_image(source_image())
PNG = base64.b64decode(GOOD)


def png_header_claiming(width, height) -> str:
    """A tiny PNG whose header claims a huge size (a decompression bomb's first bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    return base64.b64encode(raw).decode()


def base(**kw):
    return {"init_images": [GOOD], "width": 64, "height": 64, "steps": 2, **kw}


MALFORMED = [
    # wrong JSON types (FastAPI's validation: 422 with the field's location)
    ("steps string", base(steps="many"), 422, "steps"),
    ("width float", base(width=64.5), 422, "width"),
    ("seed list of strings", base(seed=["a"]), 422, "seed"),
    ("prompt number list", base(prompt=[1, 2]), 422, "prompt"),
    ("init_images not a list", base(init_images=GOOD), 422, "init_images"),
    ("init_images of numbers", base(init_images=[1, 2]), 422, "init_images"),
    ("override_settings list", base(override_settings=[1]), 422, "override_settings"),
    ("cfg_scale object", base(cfg_scale={"a": 1}), 422, "cfg_scale"),
    ("batch_size bool-ish string", base(batch_size="two"), 422, "batch_size"),
    ("styles string", base(styles=5), 422, "styles"),
    ("mask number", base(mask=5), 422, "mask"),
    ("nested garbage", base(alwayson_scripts=[[{"x": []}]]), 422, "alwayson_scripts"),
    ("denoising null-ish string", base(denoising_strength="lots"), 422, "denoising_strength"),
    ("subseed_strength list", base(subseed_strength=[0.1]), 422, "subseed_strength"),
    ("inpaint_full_res dict", base(inpaint_full_res={"a": 1}), 422, "inpaint_full_res"),
    # values
    ("steps zero", base(steps=0), 422, "steps must be between 1"),
    ("steps negative", base(steps=-5), 422, "steps must be between 1"),
    ("steps huge", base(steps=100000), 422, "steps must be between 1"),
    ("width zero", base(width=0), 422, "width must be a multiple of 8"),
    ("width negative", base(width=-64), 422, "width must be a multiple of 8"),
    ("width not multiple of 8", base(width=65), 422, "width must be a multiple of 8"),
    ("height huge", base(height=1_000_000), 422, "height must be a multiple of 8"),
    ("negative strength", base(denoising_strength=-0.5), 422, "denoising_strength must be >= 0"),
    ("unknown sampler", base(sampler_name="Eulerish"), 422, "valid names: DPM++ 2M"),
    ("unknown scheduler", base(scheduler="Karrass"), 422, "unknown schedule type"),
    ("too many images", base(init_images=[GOOD, GOOD, GOOD], batch_size=2), 422, "bad number of images passed: 3"),
    ("batch_size zero", base(batch_size=0), 422, "batch_size"),
    ("n_iter negative", base(n_iter=-1), 422, "n_iter"),
    ("resize_mode 9", base(resize_mode=9), 422, "resize_mode must be one of"),
    ("inpainting_fill 7", base(inpainting_fill=7), 422, "inpainting_fill must be one of"),
    ("mask_blur negative", base(mask_blur_x=-3), 422, "mask_blur_x"),
    ("padding negative", base(inpaint_full_res_padding=-4), 422, "inpaint_full_res_padding"),
    ("cfg NaN as string", base(cfg_scale="NaN"), 422, "cfg_scale"),
    ("unknown option", base(override_settings={"no_such_option": 1}), 422, "unknown option 'no_such_option'"),
    ("bad option value", base(override_settings={"CLIP_stop_at_last_layers": 99}), 422, "CLIP_stop_at_last_layers"),
    ("bad emphasis", base(override_settings={"emphasis": "Loud"}), 422, "emphasis must be one of"),
    ("restore faces", base(restore_faces=True), 422, "restore_faces"),
    ("unknown script", base(script_name="ultimate sd upscale"), 422, "Script 'ultimate sd upscale' not found"),
    ("unknown always-on script", base(alwayson_scripts={"ControlNet": {"args": []}}), 422, "always on script"),
    ("unknown field", base(wibble=1), 422, "unknown fields: wibble"),
    ("unknown checkpoint", base(override_settings={"sd_model_checkpoint": "x"}), 422, "could not find checkpoint"),
    ("bad infotext value", base(infotext="p\nSteps: lots, Sampler: Euler, Seed: 1"), 422,
     "infotext: bad value for 'Steps'"),
    ("tiling with TAESD", base(override_settings={"sd_vae_encode_method": "TAESD"}), 422, "not supported"),
    # images
    ("missing images", {"prompt": "x"}, 404, "Init image not found"),
    ("empty image list", base(init_images=[]), 404, "Init image not found"),
    ("bad base64", base(init_images=["!!!not base64!!!"]), 422, "init_images[0]"),
    ("not an image", base(init_images=[base64.b64encode(b"hello world").decode()]), 422, "invalid encoded image"),
    ("truncated png", base(init_images=[base64.b64encode(PNG[: len(PNG) // 2]).decode()]), 422, "init_images[0]"),
    ("empty string image", base(init_images=[""]), 422, "init_images[0]"),
    ("broken data uri", base(init_images=["data:image/png"]), 422, "malformed data URI"),
    ("bad mask", base(mask="@@@@"), 422, "mask"),
    ("huge dimensions", base(init_images=[png_header_claiming(30000, 30000)]), 413, "larger than this server's limit"),
    ("bomb mask", base(mask=png_header_claiming(20000, 20000)), 413, "mask"),
    ("second image bad", base(init_images=[GOOD, "xx"], batch_size=2), 422, "init_images[1]"),
    ("url refused", base(init_images=["https://example.com/x.png"]), 422, "image URLs are not accepted"),
]


def test_malformed_requests_each_get_a_useful_4xx_and_the_server_survives(server):
    def rss():
        return server.get("/sdapi/v1/memory").json()["ram"]["used"]

    warm = server.post("/sdapi/v1/img2img", json=base())
    assert warm.status_code == 200
    baseline = rss()
    for _ in range(2):
        for name, body, status, message in MALFORMED:
            r = server.post("/sdapi/v1/img2img", json=body)
            assert r.status_code == status, (name, r.text)
            assert message in r.text, (name, r.text)
    for raw in (b"{not json", b"[]", b"null", b'"a string"'):
        r = server.post("/sdapi/v1/img2img", data=raw, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, raw
    ok = server.post("/sdapi/v1/img2img", json=base(seed=5))
    assert ok.status_code == 200 and len(ok.json()["images"]) == 1
    assert rss() - baseline < 150 * 1024 * 1024  # failed jobs leave nothing behind
    assert len(MALFORMED) >= 50
