"""``POST /sdapi/v1/txt2img`` and ``POST /sdapi/v1/img2img``."""

from __future__ import annotations

import base64
import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from retouch.outputs import encode_image, image_texts
from retouch.server.routes import State
from retouch.server.routing import GuardedRoute
from retouch.serving.errors import Cancelled, DuplicateTask, QueueFull, RequestError, Unavailable
from retouch.serving.requests import job_request
from retouch.serving.schemas import ImageToImageResponse, Img2ImgRequest, TextToImageResponse, Txt2ImgRequest
from retouch.serving.strict_json import json_safe

router = APIRouter(route_class=GuardedRoute)


@router.post("/sdapi/v1/txt2img", response_model=TextToImageResponse)
async def txt2img(req: Txt2ImgRequest, response: Response, state: State):
    return await _generate(req, response, state)


@router.post("/sdapi/v1/img2img", response_model=ImageToImageResponse)
async def img2img(req: Img2ImgRequest, response: Response, state: State):
    return await _generate(req, response, state)


async def _generate(req: Img2ImgRequest | Txt2ImgRequest, response: Response, state: State):
    """Validate, queue, run and answer one generation request (A1111's response: images, parameters, info)."""
    received = time.perf_counter()
    # decoding and validating grow with the request: never on the event loop
    request = await run_in_threadpool(job_request, req, state)
    if req.override_settings_restore_afterwards is False:
        state.options = request.options.settings()  # A1111 keeps the overrides as settings (the checkpoint: see keep_checkpoint)
    timing = {"decode": time.perf_counter() - received}
    try:
        outcome = await state.backend.run(request)
    except QueueFull:
        raise RequestError(503, "the queue is full; retry later", headers={"Retry-After": "5"}) from None
    except Unavailable as e:
        raise RequestError(503, str(e), "ServiceUnavailable", headers={"Retry-After": "5"}) from None
    except DuplicateTask as e:
        raise RequestError(409, str(e), "Conflict") from None
    except Cancelled as e:
        raise RequestError(409, str(e), "Interrupted") from None
    except ValueError as e:
        raise RequestError(422, str(e), "ValueError") from None
    timing.update(queue=outcome.queued_s, job=outcome.ran_s)
    state.job_timestamp = outcome.job_timestamp
    options = state.options
    encoding = time.perf_counter()
    images = await run_in_threadpool(_encode_all, outcome.images, options.samples_format, options.jpeg_quality) \
        if req.send_images else []
    timing["encode"] = time.perf_counter() - encoding
    # Standard Server-Timing header (milliseconds): where the request's time went, for clients and benchmarks
    response.headers["Server-Timing"] = ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in timing.items())
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        parameters["init_images"] = None
        parameters["mask"] = None
    if outcome.save_error:  # the job ran: its images are in the answer, with why they are not on disk
        status = 507 if outcome.disk_full else 500
        return JSONResponse(status_code=status, headers=dict(response.headers), content=json_safe({
            "images": images, "parameters": parameters, "info": outcome.info, "error": "SaveError",
            "detail": outcome.save_error, "body": "", "errors": outcome.save_error}))
    answer = TextToImageResponse if isinstance(req, Txt2ImgRequest) else ImageToImageResponse
    return answer(images=images, parameters=parameters, info=outcome.info)


def _encode_all(images: list, fmt: str, quality: int) -> list[str]:
    return [_b64(image, fmt, quality) for image in images]


def _b64(image, fmt: str, quality: int) -> str:
    return base64.b64encode(encode_image(image, fmt, texts=image_texts(image), jpeg_quality=quality)).decode("ascii")
