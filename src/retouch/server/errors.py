"""Errors in A1111's JSON envelope (``{"error", "detail", "body", "errors"}``), always serialisable."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from retouch.serving.errors import error_body


def envelope(status: int, error: str, detail: Any, body: Any = "", errors: str = "",
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers, content=error_body(error, detail, body, errors))
