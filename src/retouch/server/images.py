"""Images in and out of the API: base64 / data URIs / (optionally) URLs, with size limits."""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import urllib.parse
import urllib.request
import warnings

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from retouch.imageops.resize import fix_image

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024


class ApiError(Exception):
    """An error with an HTTP status, rendered in A1111's envelope."""

    def __init__(self, status_code: int, detail: str, error: str = "HTTPException"):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error = error


def decode_image(value: object, field: str, *, max_pixels: int, allow_urls: bool) -> Image.Image:
    """A request image → PIL (EXIF-transposed, palette transparency → RGBA), or an :class:`ApiError`."""
    if not isinstance(value, str) or not value:
        raise ApiError(422, f"{field}: expected a base64-encoded image, got {type(value).__name__}", "ValueError")
    if value.startswith(("http://", "https://")):
        data = _fetch(value, field, allow_urls)
    else:
        if value.startswith("data:image/"):
            try:
                value = value.split(";", 1)[1].split(",", 1)[1]
            except IndexError:
                raise ApiError(422, f"{field}: malformed data URI", "ValueError") from None
        try:
            data = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError) as e:
            raise ApiError(422, f"{field}: invalid base64 ({e})", "ValueError") from None
    return _open(data, field, max_pixels)


def _open(data: bytes, field: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise ApiError(413, f"{field}: image of {image.width}x{image.height} pixels is larger than this "
                                    f"server's limit of {max_pixels} pixels", "PayloadTooLarge")
            image.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ApiError(413, f"{field}: image larger than this server's limit of {max_pixels} pixels ({e})",
                       "PayloadTooLarge") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ApiError(422, f"{field}: invalid encoded image ({e})", "ValueError") from None
    return fix_image(image)


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
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
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


def encode_image(image: Image.Image, fmt: str = "png", jpeg_quality: int = 80) -> str:
    """PIL → plain base64 (no data-URI prefix); PNG keeps every string ``info`` entry as a text chunk."""
    buffer = io.BytesIO()
    if fmt == "png":
        meta = PngImagePlugin.PngInfo()
        used = False
        for key, value in image.info.items():
            if isinstance(key, str) and isinstance(value, str):
                meta.add_text(key, value)
                used = True
        image.save(buffer, format="PNG", pnginfo=meta if used else None)
    else:
        from retouch.outputs import PARAMETERS

        if image.mode in ("RGBA", "P"):
            image = image.convert("RGB")
        exif = Image.Exif()
        if isinstance(image.info.get(PARAMETERS), str):
            exif[0x9286] = b"UNICODE\0" + image.info[PARAMETERS].encode("utf-16-be")
        image.save(buffer, format="JPEG" if fmt in ("jpg", "jpeg") else "WEBP", quality=jpeg_quality, exif=exif)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
