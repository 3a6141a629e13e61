"""Small utility routes: ping, PNG info, memory."""

from __future__ import annotations

from fastapi import APIRouter

from retouch.infotext import parse_infotext
from retouch.server.images import decode_image
from retouch.server.routes import State
from retouch.server.schemas import PNGInfoRequest

router = APIRouter()


@router.get("/internal/ping")
async def ping():
    return {}


@router.post("/sdapi/v1/png-info")
async def png_info(req: PNGInfoRequest, state: State):
    if not req.image.strip():
        return {"info": "", "items": {}, "parameters": {}}
    image = decode_image(req.image, "image", max_pixels=state.config.max_pixels, allow_urls=False)
    items = {k: v for k, v in image.info.items() if isinstance(v, str | int | float)}
    text = items.pop("parameters", "")
    text = text if isinstance(text, str) else str(text)
    prompt, negative, params = parse_infotext(text) if text else ("", "", {})
    parameters = {"Prompt": prompt, "Negative prompt": negative, **params} if text else {}
    return {"info": text, "items": items, "parameters": parameters}


@router.get("/sdapi/v1/memory")
async def memory(state: State):
    return state.backend.memory()
