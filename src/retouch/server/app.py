"""The A1111-compatible HTTP API: ``create_app(backend)``.

The app is the HTTP edge only: it validates requests (:mod:`retouch.serving.requests`), hands jobs to a
:class:`~retouch.serving.backend.Backend` (which owns jobs, progress and interrupts), and renders
results and errors in A1111's shapes. Routes live in :mod:`retouch.server.routes`.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from retouch import __version__
from retouch.server.auth import basic_auth
from retouch.server.errors import envelope
from retouch.server.limits import RequestLimits
from retouch.server.routes import catalog, extras, img2img, info, networks, progress
from retouch.serving.errors import RequestError
from retouch.serving.local import LocalBackend
from retouch.serving.models import ModelManager, manager_settings
from retouch.serving.protocols import Backend
from retouch.serving.state import ServerConfig, ServerState
from retouch.serving.strict_json import json_safe

__all__ = ["ServerConfig", "create_app", "local_backend"]


def local_backend(config: ServerConfig) -> LocalBackend:
    """The single-process backend for ``config``: its checkpoints and one worker thread."""
    return LocalBackend(ModelManager(**manager_settings(config)), config.max_queue)


def create_app(backend: Backend | None = None, config: ServerConfig | None = None) -> FastAPI:
    """The API app over ``backend`` (default: a :class:`LocalBackend` for ``config``)."""
    config = config or ServerConfig()
    backend = backend or local_backend(config)
    app = FastAPI(title="retouch", version=__version__, description="AUTOMATIC1111-compatible img2img / inpainting API")
    app.state.server = ServerState(config=config, backend=backend, options=config.options)
    if config.api_auth:
        app.middleware("http")(basic_auth(config.api_auth))
    # outermost (added last): no route, page or API, authenticated or not, reads more than this
    app.add_middleware(RequestLimits, max_bytes=int(config.max_body_mb * 2**20), read_timeout=config.body_timeout)
    _add_error_handlers(app)
    for module in (img2img, progress, catalog, info, networks, extras):
        app.include_router(module.router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, e: RequestValidationError):
        # FastAPI's own shape ({"detail": [...]}, as A1111's API answers it), made JSON-safe
        errors = [{k: _brief(v) if k == "input" else v for k, v in error.items() if k != "ctx"} for error in e.errors()]
        return JSONResponse(status_code=422, content=json_safe({"detail": errors}))

    @app.exception_handler(RequestError)
    async def api_error(_: Request, e: RequestError):
        return envelope(e.status_code, e.error, e.detail, headers=e.headers or None)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException):
        return envelope(e.status_code, "HTTPException", e.detail, headers=dict(e.headers or {}) or None)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception):
        return envelope(500, type(e).__name__, str(e))


def _brief(value: object, limit: int = 200) -> object:
    """An echoed input, cut short: a wrong value is named, not sent back whole."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value)} characters)"
    if isinstance(value, list | dict) and len(repr(value)) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    return value
