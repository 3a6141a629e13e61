"""HTTP Basic auth on every route (A1111's ``--api-auth user:pass[,user2:pass2]``)."""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import Request

from retouch.server.errors import envelope


def basic_auth(api_auth: str):
    """A middleware that answers 401 unless the request carries one of the given user:password pairs."""
    pairs = {}
    for item in api_auth.split(","):
        user, _, password = item.strip().partition(":")
        pairs[user] = password

    async def middleware(request: Request, call_next):
        header = request.headers.get("authorization", "")
        ok = False
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
                ok = user in pairs and secrets.compare_digest(password.encode(), pairs[user].encode())
            except (ValueError, UnicodeDecodeError, binascii.Error):
                ok = False
        if not ok:
            return envelope(401, "HTTPException", "Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})
        return await call_next(request)

    return middleware
