"""Every API route's JSON body is parsed strictly (:mod:`retouch.serving.strict_json`) off the event loop,
before FastAPI sees it; FastAPI then reuses the parsed value. Its size and read time are bounded for every
route of the app by :class:`retouch.server.limits.RequestLimits`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from retouch.serving.errors import RequestError
from retouch.serving.strict_json import BodyError, parse_body


class GuardedRoute(APIRoute):
    """An :class:`APIRoute` whose JSON body is strictly parsed in a worker thread."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                body = await request.body()
                if body:
                    try:
                        request._json = await run_in_threadpool(parse_body, body)
                    except BodyError as e:
                        raise RequestError(422, str(e), "ValueError") from None
            return await handler(request)

        return guarded
