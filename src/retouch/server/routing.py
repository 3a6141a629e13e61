"""Every route's request body goes through one guard before FastAPI sees it: a size limit checked before
reading (``Content-Length``) and while reading (chunked bodies), a total read time, and strict JSON
parsing (:mod:`retouch.server.strict_json`) off the event loop. FastAPI then reuses the parsed value."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from retouch.server.errors import ApiError
from retouch.server.strict_json import BodyError, parse_body


class BodyLimits:
    """Set on the app (``app.state.body_limits``) by :func:`retouch.server.app.create_app`."""

    def __init__(self, max_bytes: int, read_timeout: float):
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout


async def read_body(request: Request, limits: BodyLimits) -> bytes:
    """The request body, or :class:`ApiError` 413 (too large) / 408 (not sent in time)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length: not a number: {declared[:32]!r}")
        if int(declared) > limits.max_bytes:
            raise _too_large(limits, int(declared))
    chunks: list[bytes] = []
    size = 0

    async def receive_all() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_bytes:
                raise _too_large(limits, size)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), timeout=limits.read_timeout)
    except TimeoutError:
        raise ApiError(408, f"the request body was not received within {limits.read_timeout:g} s") from None
    return b"".join(chunks)


def _too_large(limits: BodyLimits, size: int) -> ApiError:
    return ApiError(413, f"request body of {size} bytes is larger than this server's limit of "
                         f"{limits.max_bytes} bytes (--max-body-mb)", "PayloadTooLarge")


class GuardedRoute(APIRoute):
    """An :class:`APIRoute` whose JSON body is size-limited, time-limited and strictly parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                limits: BodyLimits = request.app.state.body_limits
                body = await read_body(request, limits)
                request._body = body  # what Request.body() returns from now on
                if body:
                    try:
                        request._json = await run_in_threadpool(parse_body, body)
                    except BodyError as e:
                        raise ApiError(422, str(e), "ValueError") from None
            return await handler(request)

        return guarded
