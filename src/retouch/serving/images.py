"""Images in and out of the API: base64 / data URIs / (optionally) URLs, with size limits."""

from __future__ import annotations

import base64
import binascii
import http.client
import io
import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

from retouch.imageops.resize import ACCEPTED_FORMATS, fix_image
from retouch.serving.errors import RequestError, scrub

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024


def decode_image(value: object, field: str, *, max_pixels: int, allow_urls: bool) -> Image.Image:
    """A request image → PIL (EXIF-transposed, palette transparency → RGBA), or an :class:`RequestError`."""
    return decode_opened(open_image(image_bytes(value, field, allow_urls=allow_urls), field, max_pixels), field)


def decode_opened(image: Image.Image, field: str) -> Image.Image:
    """Decode an image :func:`open_image` opened (its pixels), as A1111 reads uploads; ``ValueError``
    naming the field when the data is broken past its header."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ValueError(f"{field}: invalid encoded image ({scrub(str(e))})") from None
    return fix_image(image)


def image_bytes(value: object, field: str, *, allow_urls: bool) -> bytes:
    """The encoded image a request field carries: base64, a ``data:image/…;base64,`` URI, or a URL."""
    if not isinstance(value, str) or not value:
        raise RequestError(422, f"{field}: expected a base64-encoded image, got {type(value).__name__}", "ValueError")
    if value.startswith(("http://", "https://")):
        return _fetch(value, field, allow_urls)
    if value.startswith("data:image/"):
        try:
            value = value.split(";", 1)[1].split(",", 1)[1]
        except IndexError:
            raise RequestError(422, f"{field}: malformed data URI", "ValueError") from None
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as e:
        raise RequestError(422, f"{field}: invalid base64 ({e})", "ValueError") from None


def open_image(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """The image's header only (nothing decoded yet); its size checked against ``max_pixels``."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"{field}: image larger than this server's limit of {max_pixels} pixels ({e})",
                       "PayloadTooLarge") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise RequestError(422, f"{field}: invalid encoded image ({e}); send PNG, JPEG, WebP, BMP, TIFF or GIF",
                       "ValueError") from None
    if image.width * image.height > max_pixels:
        raise RequestError(413, f"{field}: image of {image.width}x{image.height} pixels is larger than this "
                            f"server's limit of {max_pixels} pixels", "PayloadTooLarge")
    return image


def _fetch(url: str, field: str, allow_urls: bool) -> bytes:
    if not allow_urls:
        raise RequestError(422, f"{field}: image URLs are not accepted by this server (start it with "
                            "--allow-image-urls to allow them); send the image base64-encoded", "ValueError")
    try:
        return fetch_url(url)
    except FetchError as e:
        raise RequestError(e.status, f"{field}: {e}", "ValueError" if e.status == 422 else "PayloadTooLarge") from None


# -- fetching image URLs ----------------------------------------------------------------------------
MAX_REDIRECTS = 5
FETCH_SECONDS = 20.0  # for the whole fetch: every hop, every byte


class FetchError(Exception):
    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


Resolver = Callable[[str, int], list[str]]
Opener = Callable[[str, int, float], socket.socket]


def _resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _open(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout=timeout)


def fetch_url(url: str, *, resolve: Resolver = _resolve, open_socket: Opener = _open,
              seconds: float = FETCH_SECONDS, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
    """GET ``url``, following redirects, never from a loopback, private or otherwise non-global address.

    Every hop's host is resolved and *all* its addresses checked; the connection then goes to the checked
    address (so a second DNS answer cannot differ). ``seconds`` bounds the whole fetch, ``max_bytes`` the
    body (413). ``resolve`` and ``open_socket`` are the network (tests replace them).
    """
    deadline = time.monotonic() + seconds
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"only http(s) URLs with a host are fetched, got {url[:200]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = _checked_address(parts.hostname, port, resolve)
        response, connection = _get(parts, address, port, (deadline, seconds), open_socket)
        try:
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location", ""))
                continue
            if response.status != 200:
                raise FetchError(f"the image URL answered HTTP {response.status}")
            return _read(response, connection, (deadline, seconds), max_bytes)
        finally:
            connection.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _checked_address(host: str, port: int, resolve: Resolver) -> str:
    try:
        addresses = resolve(host, port)
    except OSError as e:
        raise FetchError(f"cannot resolve {host!r} ({e})") from None
    if not addresses:
        raise FetchError(f"cannot resolve {host!r}")
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise FetchError(f"request to a local or private address ({address}, for {host!r}) not allowed")
    return addresses[0]


def _get(parts: urllib.parse.SplitResult, address: str, port: int, budget: tuple[float, float],
         open_socket: Opener):
    deadline, seconds = budget
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(f"the image URL did not answer within {seconds:g} s")
    connection_class = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = connection_class(parts.hostname or "", port, address, remaining, open_socket)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("GET", path, headers={"User-Agent": "retouch", "Accept": "image/*"})
        return connection.getresponse(), connection
    except TimeoutError:
        connection.close()
        raise FetchError(f"the image URL did not answer within {seconds:g} s") from None
    except (OSError, http.client.HTTPException) as e:
        connection.close()
        raise FetchError(f"could not fetch the image URL ({type(e).__name__}: {e})") from None


def _read(response: http.client.HTTPResponse, connection: http.client.HTTPConnection, budget: tuple[float, float],
          max_bytes: int) -> bytes:
    deadline, seconds = budget
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"the image URL did not send its image within {seconds:g} s")
        if connection.sock is not None:
            connection.sock.settimeout(remaining)
        try:
            chunk = response.read1(65536)
        except TimeoutError:
            raise FetchError(f"the image URL did not send its image within {seconds:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise FetchError(f"could not fetch the image URL ({type(e).__name__}: {e})") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"image URL content larger than {max_bytes} bytes", status=413)
        chunks.append(chunk)


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to ``host`` that goes to an address checked beforehand."""

    def __init__(self, host: str, port: int, address: str, timeout: float, open_socket: Opener):
        super().__init__(host, port, timeout=timeout)
        self._address, self._open_socket = address, open_socket

    def connect(self) -> None:
        self.sock = self._open_socket(self._address, self.port, self.timeout or FETCH_SECONDS)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS likewise; the certificate is still checked against the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float, open_socket: Opener):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address, self._open_socket = address, open_socket

    def connect(self) -> None:
        sock = self._open_socket(self._address, self.port, self.timeout or FETCH_SECONDS)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
