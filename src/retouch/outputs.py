"""Writing images to disk with their infotext, named as A1111 names them (``00000-<seed>.png``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from PIL import Image, PngImagePlugin

PARAMETERS = "parameters"


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
    decoration (``00000-1234.png``), grids the basename ``grid`` and none (``grid-0000.png``).

    The infotext goes into the PNG ``parameters`` text chunk (EXIF UserComment for JPEG/WebP).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    decoration = f"-{decoration}" if decoration else ""
    count = next_sequence_number(folder, basename)
    for i in range(500):
        number = f"{count + i:05}" if not basename else f"{basename}-{count + i:04}"
        path = folder / f"{number}{decoration}{suffix}.{extension}"
        if not path.exists():
            break
    write_image(image, path, infotext, jpeg_quality=jpeg_quality, webp_lossless=webp_lossless)
    return path


def write_image(image: Image.Image, path: Path, infotext: str | None, *, jpeg_quality: int = 80,
                webp_lossless: bool = False) -> None:
    extension = path.suffix.lower()
    if extension == ".png":
        info = None
        if infotext is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text(PARAMETERS, infotext)
        image.save(path, format="PNG", pnginfo=info)
        return
    if image.mode in ("RGBA", "P"):
        image = image.convert("RGB")
    exif = None
    if infotext is not None:
        exif = Image.Exif()
        exif[0x9286] = b"UNICODE\0" + infotext.encode("utf-16-be")  # UserComment
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[extension]
    kwargs = {"quality": jpeg_quality}
    if fmt == "WEBP":
        kwargs["lossless"] = webp_lossless
    image.save(path, format=fmt, exif=exif, **kwargs)
