"""Images out: the one encoder of images with their infotext (saved files and API responses alike), and
files named as A1111 names them (``00000-<seed>.png``, ``grid-0000.png``).

PNG carries text chunks (the infotext in ``parameters``); JPEG and WebP carry the infotext as the EXIF
``UserComment``, as A1111 writes it. Files are written to a temporary name and renamed, so a failed
save leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

PARAMETERS = "parameters"
_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_USER_COMMENT = 0x9286


def encode_image(image: Image.Image, fmt: str = "png", *, texts: Mapping[str, str] | None = None,
                 jpeg_quality: int = 80, webp_lossless: bool = False) -> bytes:
    """``image`` encoded as ``fmt`` (png, jpg/jpeg, webp) with ``texts`` as its metadata: PNG text chunks,
    or for JPEG/WebP the ``parameters`` text as the EXIF UserComment (``UNICODE\\0`` + UTF-16-BE)."""
    name = _FORMATS.get(fmt.lower())
    if name is None:
        raise ValueError(f"samples_format must be one of {sorted(_FORMATS)}, got {fmt!r}")
    buffer = io.BytesIO()
    texts = texts or {}
    if name == "PNG":
        info = None
        if texts:
            info = PngImagePlugin.PngInfo()
            for key, value in texts.items():
                info.add_text(key, value)
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()
    if image.mode in ("RGBA", "P"):
        image = image.convert("RGB")
    exif = Image.Exif()
    if texts.get(PARAMETERS) is not None:
        exif[_USER_COMMENT] = b"UNICODE\0" + texts[PARAMETERS].encode("utf-16-be")
    kwargs: dict = {"quality": jpeg_quality}
    if name == "WEBP":
        kwargs["lossless"] = webp_lossless
    image.save(buffer, format=name, exif=exif, **kwargs)
    return buffer.getvalue()


def image_texts(image: Image.Image) -> dict[str, str]:
    """The string metadata an image carries (``image.info``), e.g. its ``parameters`` infotext."""
    return {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """One more than the highest leading number of the files in ``folder`` (A1111's counter)."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.startswith(prefix):
                first = os.path.splitext(name[len(prefix):])[0].split("-")[0]
                with contextlib.suppress(ValueError):
                    highest = max(int(first), highest)
    return highest + 1


def save_image(image: Image.Image, folder: str | os.PathLike, *, decoration: str, infotext: str | None,
               extension: str = "png", basename: str = "", suffix: str = "", jpeg_quality: int = 80,
               webp_lossless: bool = False) -> Path:
    """Save ``image`` as ``<count>-<decoration><suffix>.<ext>`` in ``folder`` — samples use the seed as
    decoration (``00000-1234.png``), grids the basename ``grid`` and none (``grid-0000.png``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = encode_image(image, extension, texts={PARAMETERS: infotext} if infotext is not None else None,
                        jpeg_quality=jpeg_quality, webp_lossless=webp_lossless)
    decoration = f"-{decoration}" if decoration else ""
    count = next_sequence_number(folder, basename)
    for i in range(500):
        number = f"{count + i:05}" if not basename else f"{basename}-{count + i:04}"
        path = folder / f"{number}{decoration}{suffix}.{extension}"
        if not path.exists():
            break
    _write_atomically(path, data)
    return path


MIN_FREE_BYTES = 32 * 2**20  # below this a folder counts as full before any work starts
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def writable_problem(folder: str | os.PathLike) -> str | None:
    """Why images cannot be saved in ``folder`` (None: they can): it cannot be made, a file cannot be
    written in it, or it has less than :data:`MIN_FREE_BYTES` free."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".retouch-write-check-"):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as e:
        return f"cannot write to {folder} ({e.strerror or e})"
    if free < MIN_FREE_BYTES:
        return f"{folder} has only {free // 2**20} MB free"
    return None


def is_disk_full(error: OSError) -> bool:
    return error.errno in _DISK_FULL


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@dataclass
class Outputs:
    """What a job does with its images besides returning them.

    ``samples_dir`` / ``grids_dir``: save there (None: don't save). ``grid``: make a grid when the
    options ask for one (A1111: ``not do_not_save_grid``). ``filename_stem``: name samples after an input
    file (batch from a folder) instead of the seed. ``files`` collects what was written.
    """

    samples_dir: str | os.PathLike | None = None
    grids_dir: str | os.PathLike | None = None
    grid: bool = True
    filename_stem: str | None = None
    files: list[Path] = field(default_factory=list)

    def decoration(self, seed: int, number: int, multiple: bool) -> str:
        """The file name part after the counter: the seed, or for folder batches ``<stem>`` /
        ``<stem>-<generation number>`` (spec §3.3)."""
        if self.filename_stem is None:
            return str(seed)
        return f"{self.filename_stem}-{number}" if multiple else self.filename_stem
