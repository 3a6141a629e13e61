"""Images in and out of the API: base64 / data URIs / (optionally) URLs, with size limits."""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import urllib.parse
import urllib.request

from PIL import Image, UnidentifiedImageError

from retouch.imageops.resize import fix_image
from retouch.server.errors import ApiError

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024


ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")  # what A1111 users send; never EPS & co.


def decode_image(value: object, field: str, *, max_pixels: int, allow_urls: bool) -> Image.Image:
    """A request image → PIL (EXIF-transposed, palette transparency → RGBA), or an :class:`ApiError`."""
    image = open_image(image_bytes(value, field, allow_urls=allow_urls), field, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(422, f"{field}: invalid encoded image ({e})", "ValueError") from None
    return fix_image(image)


def image_bytes(value: object, field: str, *, allow_urls: bool) -> bytes:
    """The encoded image a request field carries: base64, a ``data:image/…;base64,`` URI, or a URL."""
    if not isinstance(value, str) or not value:
        raise ApiError(422, f"{field}: expected a base64-encoded image, got {type(value).__name__}", "ValueError")
    if value.startswith(("http://", "https://")):
        return _fetch(value, field, allow_urls)
    if value.startswith("data:image/"):
        try:
            value = value.split(";", 1)[1].split(",", 1)[1]
        except IndexError:
            raise ApiError(422, f"{field}: malformed data URI", "ValueError") from None
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as e:
        raise ApiError(422, f"{field}: invalid base64 ({e})", "ValueError") from None


def open_image(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """The image's header only (nothing decoded yet); its size checked against ``max_pixels``."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"{field}: image larger than this server's limit of {max_pixels} pixels ({e})",
                       "PayloadTooLarge") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(422, f"{field}: invalid encoded image ({e}); send PNG, JPEG, WebP, BMP, TIFF or GIF",
                       "ValueError") from None
    if image.width * image.height > max_pixels:
        raise ApiError(413, f"{field}: image of {image.width}x{image.height} pixels is larger than this "
                            f"server's limit of {max_pixels} pixels", "PayloadTooLarge")
    return image


def _fetch(url: str, field: str, allow_urls: bool) -> bytes:
    if not allow_urls:
        raise ApiError(422, f"{field}: image URLs are not accepted by this server (start it with "
                            "--allow-image-urls to allow them); send the image base64-encoded", "ValueError")
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as e:
        raise ApiError(422, f"{field}: cannot resolve {host!r} ({e})", "ValueError") from None
    for address in addresses:
        if not ipaddress.ip_address(str(address).split("%")[0]).is_global:
            raise ApiError(422, f"{field}: request to a local or private address ({address}) not allowed",
                           "ValueError")
    try:
        with urllib.request.urlopen(url, timeout=20) as response:  # noqa: S310 - scheme checked above
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as e:
        raise ApiError(422, f"{field}: could not fetch the image URL ({e})", "ValueError") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ApiError(413, f"{field}: image URL content larger than {MAX_DOWNLOAD_BYTES} bytes", "PayloadTooLarge")
    return data
