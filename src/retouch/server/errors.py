"""Errors in A1111's JSON envelope (``{"error", "detail", "body", "errors"}``), always serialisable."""

from __future__ import annotations

import re
from typing import Any

from fastapi.responses import JSONResponse

from retouch.server.strict_json import json_safe

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # "<_io.BytesIO object at 0x7f…>" says nothing useful, and leaks


class ApiError(Exception):
    """An error with an HTTP status, rendered in A1111's envelope."""

    def __init__(self, status_code: int, detail: str, error: str = "HTTPException",
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error = error
        self.headers = headers or {}


def scrub(text: str) -> str:
    """An error message fit to send: no memory addresses."""
    return _ADDRESS.sub("", text)


def envelope(status: int, error: str, detail: Any, body: Any = "", errors: str = "",
             headers: dict[str, str] | None = None) -> JSONResponse:
    detail = scrub(detail) if isinstance(detail, str) else detail
    content = {"error": error, "detail": detail, "body": body, "errors": scrub(errors or str(detail))}
    return JSONResponse(status_code=status, headers=headers, content=json_safe(content))
