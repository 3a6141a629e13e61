"""Request bodies are JSON as RFC 8259 defines it, and every response is JSON that any client can read.

Python's ``json`` accepts ``NaN``/``Infinity`` and lone UTF-16 surrogates (``"\\ud800"``); neither can be
sent back (``allow_nan=False`` refuses the first, UTF-8 the second), so before this module an input
holding one failed *while its error was being reported*. Here:

* :func:`parse_body` parses strictly and names the offending field (``override_settings.eta``) in a
  :class:`BodyError`;
* :func:`json_safe` makes anything echoed back (error details, inputs) serialisable.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_DEPTH = 64  # nesting levels a request body may have (A1111's schema needs 3)
MAX_SEPARATORS = 200_000  # "," and ":" in a body: bounds how many values parsing (which holds the GIL) makes


class BodyError(ValueError):
    """A request body that is not acceptable JSON; ``field`` is the dotted path of the bad value."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class _NonFinite:
    def __init__(self, name: str):
        self.name = name


def parse_body(body: bytes) -> Any:
    """Parse a request body; raise :class:`BodyError` for invalid JSON, ``NaN``/``±Infinity``, lone
    surrogates in any string or key, or nesting deeper than :data:`MAX_DEPTH`."""
    separators = body.count(b",") + body.count(b":")
    if separators > MAX_SEPARATORS:
        raise BodyError("", f"{separators} separators: more JSON values than this server accepts ({MAX_SEPARATORS})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError("", f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as e:
        raise BodyError("", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise BodyError("", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    check_value(value)
    return value


def check_value(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise :class:`BodyError` naming the first non-finite number, lone surrogate or too-deep nesting."""
    if depth > MAX_DEPTH:
        raise BodyError(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, _NonFinite):
        raise BodyError(path, f"{value.name} is not a number JSON allows; send a finite number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BodyError(path, "a number too large for a 64-bit float; send a finite number")
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise BodyError(path, "a string holding a lone UTF-16 surrogate (invalid Unicode)")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                raise BodyError(path, "a key holding a lone UTF-16 surrogate (invalid Unicode)")
            check_value(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]", depth + 1)


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with every non-finite float replaced by its name and every lone surrogate by U+FFFD, and
    anything not JSON by its ``repr`` — so that an error can always be reported."""
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {json_safe(str(k), depth + 1): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, _NonFinite):
        return value.name
    return json_safe(type(value).__name__, depth + 1)
