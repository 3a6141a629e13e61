"""What goes wrong with a request, as values every face can show: a :class:`RequestError` carries the HTTP status
A1111's API answers with (the server renders it in A1111's envelope, the page as a message), and the job queue's
refusals."""

from __future__ import annotations

import re
from typing import Any

from retouch.serving.strict_json import json_safe

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # "<_io.BytesIO object at 0x7f…>" says nothing useful, and leaks


class RequestError(Exception):
    """A refused request: ``status_code`` (4xx/5xx), ``detail`` (the message), ``error`` (A1111's error name)."""

    def __init__(self, status_code: int, detail: str, error: str = "HTTPException",
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error = error
        self.headers = headers or {}


def scrub(text: str) -> str:
    """An error message fit to show a client: no memory addresses."""
    return _ADDRESS.sub("", text)


class QueueFull(Exception):  # noqa: N818
    """No room for another job: 503, retry later."""


class Unavailable(Exception):  # noqa: N818
    """No worker can take the job now (a replica died and the retry failed too): 503, retry later."""


class DuplicateTask(Exception):  # noqa: N818
    """A task with this id is already queued or running."""


class Cancelled(Exception):  # noqa: N818
    """The task was interrupted while still waiting in the queue."""


def error_body(error: str, detail: Any, body: Any = "", errors: str = "") -> dict[str, Any]:
    """A1111's error envelope ``{"error", "detail", "body", "errors"}``, serialisable whatever ``detail`` holds."""
    detail = scrub(detail) if isinstance(detail, str) else detail
    return json_safe({"error": error, "detail": detail, "body": body, "errors": scrub(errors or str(detail))})
