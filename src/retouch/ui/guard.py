"""What the page's routes accept, checked before Gradio sees a request (an ASGI middleware inside the app's
:class:`~retouch.server.limits.RequestLimits` and ``--api-auth``, which bound the body's size and time).

Gradio 6 answers on about fifty routes, and its own "only files uploaded by a user" check is skipped for an app
mounted in another (``blocks.has_launched`` is never set): a request naming ``/etc/passwd`` as an image had the
file copied into the cache, where ``/gradio_api/file=`` served it, and a FIFO named there froze the event loop.
So, whatever Gradio does:

* only the routes the page uses exist (everything else of Gradio's, e.g. ``/gradio_api/file=<URL>``, a fetching
  proxy, is 404);
* every file a page request names (any ``{"path": …}`` in its JSON, at any depth) must be a regular file in the
  page's own upload folder (:class:`~retouch.ui.uploads.UploadFolder`), else 403; inline ``data:`` URLs are 403
  (they would be decoded before any size check); it must be an image the API reads (422), whose header is within
  ``--max-pixels`` (413);
* ``/gradio_api/file=`` serves only that folder;
* JSON bodies hold at most ``max_json_bytes`` (the page uploads files; its JSON is small) and are parsed and
  checked off the event loop; uploads must declare their length, fit the folder's quota (507), and a cut-off
  upload's partial file is deleted (the refusal is raised into Gradio's parser as the error it cleans up after).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradio.route_utils import MultiPartException
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match

from retouch.imageops.resize import ACCEPTED_FORMATS
from retouch.serving.errors import RequestError, error_body
from retouch.serving.strict_json import BodyError, parse_body
from retouch.ui.uploads import UploadFolder

API = "/gradio_api"
# The routes the page uses (recorded from Chromium on every tab), by method; a trailing "/" or "=" is a prefix.
READ_ROUTES = ("/", "/config", "/config/", "/theme.css", "/favicon.ico", "/robots.txt", "/assets/", "/static/",
               "/svelte/", f"{API}/info", f"{API}/info/", f"{API}/heartbeat/", f"{API}/queue/data",
               f"{API}/upload_progress", f"{API}/startup-events", f"{API}/call/", f"{API}/file=")
JSON_ROUTES = (f"{API}/queue/join", f"{API}/run/", f"{API}/call/", f"{API}/cancel")
UPLOAD_ROUTE = f"{API}/upload"


class PageRefusal(Exception):  # noqa: N818 - becomes the response
    def __init__(self, status: int, detail: str, error: str = "Forbidden"):
        super().__init__(detail)
        self.error = RequestError(status, detail, error)


@dataclass(frozen=True)
class PageLimits:
    max_json_bytes: int = 1 << 20
    max_pixels: int = 4096 * 4096


def _matches(path: str, routes: tuple[str, ...]) -> bool:
    return any(path == r or (r.endswith(("/", "=")) and r != "/" and path.startswith(r)) for r in routes)


class PageGuard:
    """ASGI middleware for the page's routes; requests for ``api_routes`` pass untouched."""

    def __init__(self, app: Any, *, uploads: UploadFolder, api_routes: list[BaseRoute], limits: PageLimits):
        self.app = app
        self.uploads = uploads
        self.api_routes = api_routes
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or self._is_api(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            receive = await self._admit(scope, receive)
        except PageRefusal as e:
            await _refuse(send, e.error)
            return
        except RequestError as e:
            await _refuse(send, e)
            return
        await self.app(scope, receive, send)

    def _is_api(self, scope: dict[str, Any]) -> bool:
        return any(route.matches(scope)[0] != Match.NONE for route in self.api_routes)

    async def _admit(self, scope: dict[str, Any], receive: Any) -> Any:
        """The request's ``receive`` (replaying a body already read and checked), or :class:`PageRefusal`."""
        method, path = scope["method"], scope["path"]
        if method in ("GET", "HEAD") and _matches(path, READ_ROUTES):
            if path.startswith(f"{API}/file="):
                await run_in_threadpool(self._check_served, path.removeprefix(f"{API}/file="))
            return receive
        if method == "POST" and path == UPLOAD_ROUTE:
            return await self._admit_upload(scope, receive)
        if method == "POST" and _matches(path, JSON_ROUTES):
            body = await _read_body(receive, self.limits.max_json_bytes)
            await run_in_threadpool(self.check_payload, body)
            return _replay(body, receive)
        raise PageRefusal(404, "Not Found", "NotFound")

    def _check_served(self, path: str) -> None:
        if self.uploads.resolve(path) is None:
            raise PageRefusal(403, "File not allowed: only the page's own uploads and results are served")

    async def _admit_upload(self, scope: dict[str, Any], receive: Any) -> Any:
        declared = Headers(scope=scope).get("content-length")
        size = int(declared) if declared is not None and declared.isdigit() else None
        if size is None:
            raise PageRefusal(411, "an upload must declare its Content-Length", "LengthRequired")
        if not await run_in_threadpool(self.uploads.make_room, size):
            raise PageRefusal(507, f"no room for an upload of {size} bytes: the page's uploads are at their limit "
                                   "(--max-upload-storage-mb); try again once earlier uploads have expired",
                              "InsufficientStorage")

        async def parsed_receive() -> dict[str, Any]:
            try:
                return await receive()
            except Exception as e:  # a body cut off (too large, too slow): Gradio's parser deletes its partial
                raise MultiPartException(str(e)) from e  # files for this error, and only for it

        return parsed_receive

    # -- the files a request names ------------------------------------------------------------------
    def check_payload(self, body: bytes) -> None:
        """Parse a page request's JSON and check every file it names (runs in a worker thread)."""
        try:
            payload = parse_body(body) if body else None
        except BodyError as e:
            raise PageRefusal(422, str(e), "ValueError") from None
        used: list[Path] = []
        for where, value in _file_references(payload, "body"):
            used.append(self._check_file(where, value))
        self.uploads.touch(used)

    def _check_file(self, where: str, value: dict[str, Any]) -> Path:
        url, path = value.get("url"), value.get("path")
        if isinstance(url, str) and url.startswith("data:"):
            raise PageRefusal(403, f"{where}: inline data is not accepted; upload the file")
        found = self.uploads.resolve(path) if isinstance(path, str) else None
        if found is None:
            raise PageRefusal(403, f"{where}: not a file uploaded to this page (or it has expired: upload it again)")
        try:
            with Image.open(found, formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
        except Image.DecompressionBombError:
            width = height = self.limits.max_pixels + 1
        except (OSError, SyntaxError, ValueError, EOFError):  # every file the page takes is an image
            raise PageRefusal(422, f"{where}: not an image this page reads (PNG, JPEG, WebP, BMP, TIFF or GIF)",
                              "ValueError") from None
        if width * height > self.limits.max_pixels:
            raise PageRefusal(413, f"{where}: an image of {width}x{height} is more pixels than this server's limit "
                                   f"of {self.limits.max_pixels} (--max-pixels)", "PayloadTooLarge")
        return found


def _file_references(value: Any, where: str):
    """``(where, dict)`` for every dict in ``value`` that names a file (``path``) or carries one (``url``)."""
    if isinstance(value, dict):
        if value.get("path") is not None or (isinstance(value.get("url"), str) and value["url"].startswith("data:")):
            yield where, value
            return
        for key, item in value.items():
            yield from _file_references(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _file_references(item, f"{where}[{i}]")


async def _refuse(send: Any, error: RequestError) -> None:
    """Answer in A1111's error envelope and close the connection (an unread body goes with it)."""
    response = JSONResponse(error_body(error.error, error.detail), status_code=error.status_code,
                            headers={**error.headers, "Connection": "close"})
    await response({"type": "http"}, _disconnected, send)


async def _disconnected() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise PageRefusal(400, "the client went away", "ClientDisconnect")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PageRefusal(413, f"a page request of more than {limit} bytes (its files are uploaded, not sent "
                                   "inline)", "PayloadTooLarge")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
