"""What any request body may cost, on every route of the app (the API's, the page's and any mounted later):
at most ``max_bytes``, received whole within ``read_timeout`` seconds of the app's first read.

A pure ASGI middleware, outermost in the app: a declared ``Content-Length`` over the limit is answered 413
before a byte is read; a body that grows past it while streaming (chunked) or arrives too slowly (a "slow
upload" holding a connection) is cut off with 413 / 408. Whatever the app had begun to do with the body is
abandoned: its reads raise :class:`BodyRefused` (the page turns that into the exception Gradio's upload
parser cleans up after), its own answer is dropped, and the client gets the refusal in A1111's error
envelope. Connection counts and header deadlines are uvicorn's part (:mod:`retouch.server.protocol`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from retouch.server.errors import envelope
from retouch.serving.errors import RequestError

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyRefused(Exception):  # noqa: N818 - raised into the app's body reads, never to a client
    """The body being read broke a limit; the middleware answers with :attr:`error`."""

    def __init__(self, error: RequestError):
        super().__init__(error.detail)
        self.error = error


def too_large(size: int, max_bytes: int) -> RequestError:
    return RequestError(413, f"request body of {size} bytes is larger than this server's limit of {max_bytes} bytes "
                         "(--max-body-mb)", "PayloadTooLarge")


def too_slow(read_timeout: float) -> RequestError:
    return RequestError(408, f"the request body was not received within {read_timeout:g} s (--body-timeout)",
                    "RequestTimeout")


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` (None when absent); :class:`RequestError` 400 when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1")
            if not text.isdigit():
                raise RequestError(400, f"Content-Length: not a number: {text[:32]!r}")
            return int(text)
    return None


def has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers", ()))
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


@dataclass
class _Exchange:
    """One request's body accounting and whether the client has been answered."""

    size: int = 0
    done: bool = False
    deadline: float | None = None
    refused: RequestError | None = None
    started: bool = False


class RequestLimits:
    """ASGI middleware: every request body at most ``max_bytes``, whole within ``read_timeout`` seconds."""

    def __init__(self, app: Any, *, max_bytes: int, read_timeout: float):
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        try:
            declared = declared_length(scope)
        except RequestError as e:
            await send_error(send, e)
            return
        if declared is not None and declared > self.max_bytes:
            await send_error(send, too_large(declared, self.max_bytes))
            return
        exchange = _Exchange()

        async def limited_receive() -> Message:
            if exchange.done:
                return await receive()  # after the body: only a disconnect can come, whenever it comes
            return await self._receive_part(receive, exchange)

        async def guarded_send(message: Message) -> None:
            if exchange.refused is not None:
                return  # the app's answer to a body it did not get whole: the refusal replaces it
            if message["type"] == "http.response.start":
                exchange.started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if exchange.refused is None:
                raise
        if exchange.refused is not None and not exchange.started:
            await send_error(send, exchange.refused)

    async def _receive_part(self, receive: Any, exchange: _Exchange) -> Message:
        loop = asyncio.get_running_loop()
        if exchange.deadline is None:
            exchange.deadline = loop.time() + self.read_timeout
        try:
            message = await asyncio.wait_for(receive(), max(exchange.deadline - loop.time(), 0))
        except TimeoutError:
            exchange.refused = too_slow(self.read_timeout)
            raise BodyRefused(exchange.refused) from None
        if message["type"] == "http.request":
            exchange.size += len(message.get("body", b""))
            if exchange.size > self.max_bytes:
                exchange.refused = too_large(exchange.size, self.max_bytes)
                raise BodyRefused(exchange.refused)
            exchange.done = not message.get("more_body", False)
        return message


async def send_error(send: Any, error: RequestError) -> None:
    """Answer with ``error`` in A1111's envelope, and close the connection (its unread body goes with it)."""
    response = envelope(error.status_code, error.error, error.detail, headers={**error.headers, "Connection": "close"})
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
