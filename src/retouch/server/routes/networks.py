"""Extra networks: ``/sdapi/v1/loras``, ``/sdapi/v1/embeddings`` and their refresh routes (A1111's shapes)."""

from __future__ import annotations

from fastapi import APIRouter

from retouch.server.routes import State
from retouch.server.routing import GuardedRoute

router = APIRouter(route_class=GuardedRoute)


@router.get("/sdapi/v1/loras")
def loras(state: State):
    """Every network in the LoRA folder: ``[{name, alias, path, metadata}]``."""
    return [entry.as_api() for entry in state.loras.files]


@router.post("/sdapi/v1/refresh-loras")
def refresh_loras(state: State):
    state.loras.refresh()
    state.backend.refresh_loras()
    return None


@router.get("/sdapi/v1/embeddings")
def embeddings(state: State):
    """The current model's embeddings: ``{"loaded": {name: {step, sd_checkpoint, sd_checkpoint_name, shape,
    vectors}}, "skipped": {…}}`` (skipped: made for a text encoder of another width)."""
    return state.backend.embeddings()


@router.post("/sdapi/v1/refresh-embeddings")
def refresh_embeddings(state: State):
    state.backend.refresh_embeddings()
    return None
