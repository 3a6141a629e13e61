"""Where retouch finds its bundled files and keeps its cache. A leaf: imports nothing of retouch."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path


def cache_dir() -> Path:
    """Where retouch keeps generated files (the tiny model, hash cache): ``$RETOUCH_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/retouch`` or ``~/.cache/retouch``."""
    env = os.environ.get("RETOUCH_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "retouch"


def bundled_path(*parts: str) -> Path:
    """A file or folder shipped inside the package (``retouch/configs/…``)."""
    return Path(str(resources.files("retouch.configs").joinpath(*parts)))


def natural_key(text: str) -> list:
    """A1111's order of names: digit runs compare as numbers, the rest case-insensitively."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def walk_files(folder: Path, suffixes: tuple[str, ...], *, follow_links: bool = True) -> Iterator[Path]:
    """Files below ``folder`` with one of ``suffixes``, in A1111's order (``shared.walk_files``): folders in
    natural order, files in natural order within each (hidden folders too: A1111's ``list_hidden_files``
    is on by default)."""
    if not folder.is_dir():
        return
    walked = sorted(os.walk(folder, followlinks=follow_links), key=lambda item: natural_key(item[0]))
    for root, _, files in walked:
        for name in sorted(files, key=natural_key):
            if os.path.splitext(name)[1].lower() in suffixes:
                yield Path(root) / name


def list_files(folder: Path) -> list[Path]:
    """The files directly in ``folder``, hidden ones left out, in natural order (A1111's ``listfiles``)."""
    names = sorted((n for n in os.listdir(folder) if not n.startswith(".")), key=natural_key)
    return [folder / n for n in names if (folder / n).is_file()]
