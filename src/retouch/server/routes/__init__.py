"""The API's routes, grouped by what they serve. Each module has a ``router``."""

from typing import Annotated

from fastapi import Depends, Request

from retouch.serving.state import ServerState


def server_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app serving ``request`` (a FastAPI dependency)."""
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]
