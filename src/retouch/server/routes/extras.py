"""``POST /sdapi/v1/extra-single-image`` and ``/extra-batch-images``: A1111's Extras upscaling."""

from __future__ import annotations

import base64

from fastapi import APIRouter
from PIL import Image
from starlette.concurrency import run_in_threadpool

from retouch.outputs import encode_image, image_texts
from retouch.server.routes import State
from retouch.server.routing import GuardedRoute
from retouch.serving.errors import RequestError
from retouch.serving.images import decode_opened, image_bytes, open_image
from retouch.serving.schemas import ExtrasBatchImagesRequest, ExtrasRequest, ExtrasSingleImageRequest
from retouch.serving.state import ServerState
from retouch.upscalers import Upscalers, find_upscalers
from retouch.upscalers.extras import ExtrasUpscale, html_info, infotext, upscale_extras

router = APIRouter(route_class=GuardedRoute)


@router.post("/sdapi/v1/extra-single-image")
async def extra_single_image(req: ExtrasSingleImageRequest, state: State):
    images, text = await run_in_threadpool(_run, state, req, [(req.image, "image")])
    return {"html_info": html_info(text), "image": images[0]}


@router.post("/sdapi/v1/extra-batch-images")
async def extra_batch_images(req: ExtrasBatchImagesRequest, state: State):
    if not req.imageList:
        raise RequestError(422, "imageList: no images", "ValueError")
    images, text = await run_in_threadpool(_run, state, req,
                                           [(f.data, f"imageList[{i}].data") for i, f in enumerate(req.imageList)])
    return {"html_info": html_info(text), "images": images}


def _run(state: ServerState, req: ExtrasRequest, sources: list[tuple[str, str]]) -> tuple[list[str], str]:
    """Check everything (headers only), then upscale each image; the encoded results and the last infotext."""
    for name in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(req, name) > 0:
            raise RequestError(422, f"{name}: face restoration (GFPGAN/CodeFormer) is not supported by retouch; set "
                                    "it to 0", "ValueError")
    config = state.config
    settings = ExtrasUpscale(req.resize_mode, req.upscaling_resize, req.upscaling_resize_w, req.upscaling_resize_h,
                             req.upscaling_crop, req.upscaler_1, req.upscaler_2, req.extras_upscaler_2_visibility)
    upscalers = Upscalers(find_upscalers(config.upscaler_folders(), state.options), state.upscaler_cache)
    opened = []
    try:
        settings.check(upscalers)
        for value, field in sources:
            data = image_bytes(value, field, allow_urls=config.allow_image_urls)
            image = open_image(data, field, config.max_pixels)
            width, height = settings.output_size(*image.size)
            if width * height > config.max_pixels:
                raise RequestError(413, f"{field}: the upscaled image would be {width}x{height}, more pixels than "
                                        f"this server's limit of {config.max_pixels} (--max-pixels)",
                                   "PayloadTooLarge")
            opened.append((image, field))
    except ValueError as e:
        raise RequestError(422, str(e), "ValueError") from None
    results, text = [], ""
    with state.extras_lock:
        for image, field in opened:
            try:
                source = decode_opened(image, field)
                result, info = upscale_extras(source.convert("RGB") if source.mode not in ("RGB", "RGBA") else source,
                                              settings, upscalers, state.options)
            except ValueError as e:
                raise RequestError(422, str(e), "ValueError") from None
            text = infotext(info)
            results.append(_encode(result, source, text, state))
    return results, text


def _encode(result: Image.Image, source: Image.Image, text: str, state: ServerState) -> str:
    """The result as A1111 sends it: the source's text metadata kept, with the ``postprocessing`` text."""
    texts = {**image_texts(source), "postprocessing": text}
    data = encode_image(result, state.options.samples_format, texts=texts, jpeg_quality=state.options.jpeg_quality)
    return base64.b64encode(data).decode("ascii")
