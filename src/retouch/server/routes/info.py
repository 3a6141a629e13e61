"""Small utility routes: ping, PNG info, memory."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from retouch.infotext import generation_parameters
from retouch.server.routes import State
from retouch.server.routing import GuardedRoute
from retouch.serving.images import decode_image
from retouch.serving.schemas import PNGInfoRequest
from retouch.serving.strict_json import json_safe

router = APIRouter(route_class=GuardedRoute)


@router.get("/internal/ping")
async def ping():
    return {}


@router.post("/sdapi/v1/png-info")
async def png_info(req: PNGInfoRequest, state: State):
    return await run_in_threadpool(_png_info, req.image, state.config.max_pixels, state.loras.restore_names)


def _png_info(encoded: str, max_pixels: int, restore_lora_names) -> dict:
    if not encoded.strip():
        return {"info": "", "items": {}, "parameters": {}}
    image = decode_image(encoded, "image", max_pixels=max_pixels, allow_urls=False)
    items = {k: v for k, v in image.info.items() if isinstance(v, str | int | float)}
    text = items.pop("parameters", "")
    text = text if isinstance(text, str) else str(text)
    return json_safe({"info": text, "items": items, "parameters": generation_parameters(text, restore_lora_names) if text else {}})


@router.get("/sdapi/v1/memory")
async def memory(state: State):
    return state.backend.memory()
