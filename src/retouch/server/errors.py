"""Errors in A1111's JSON envelope (``{"error", "detail", "body", "errors"}``)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error with an HTTP status, rendered in A1111's envelope."""

    def __init__(self, status_code: int, detail: str, error: str = "HTTPException",
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error = error
        self.headers = headers or {}


def envelope(status: int, error: str, detail: Any, body: Any = "", errors: str = "",
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": error, "detail": detail, "body": body, "errors": errors or str(detail)})
