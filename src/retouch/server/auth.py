"""HTTP Basic auth on every route (A1111's ``--api-auth user:pass[,user2:pass2]``)."""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import Request

from retouch.server.errors import envelope


def parse_api_auth(api_auth: str) -> dict[str, str]:
    """``user:pass[,user2:pass2]`` → {user: password}; ``ValueError`` for an empty user or password, an
    empty entry or a user named twice (never a login without a password)."""
    pairs: dict[str, str] = {}
    for i, item in enumerate(api_auth.split(",")):
        user, colon, password = item.strip().partition(":")
        if not colon or not user or not password:
            raise ValueError(f"--api-auth: entry {i + 1} ({item.strip()!r}) must be USER:PASSWORD with both "
                             "non-empty")
        if user in pairs:
            raise ValueError(f"--api-auth: user {user!r} is named twice")
        pairs[user] = password
    return pairs


def basic_auth(api_auth: str):
    """A middleware that answers 401 unless the request carries one of the given user:password pairs."""
    pairs = parse_api_auth(api_auth)

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
