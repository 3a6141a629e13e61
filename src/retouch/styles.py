"""Saved prompt styles in A1111's ``styles.csv``: columns ``name``, ``prompt``, ``negative_prompt`` (the older
``name``, ``text`` layout is read too); rows whose name starts with ``#`` are comments. A style's text is merged
into a prompt by :func:`retouch.prompt_parser.merge_prompts` (``{prompt}`` placeholder, else appended).

The file is read again when it changes on disk, and written whole (to a temporary name, then renamed) when the page
saves or deletes a style.
"""

from __future__ import annotations

import csv
import os
import threading
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def read_styles(path: str | os.PathLike) -> dict[str, Style]:
    """The styles of an A1111 ``styles.csv`` (``ValueError`` naming the file when it cannot be read as one)."""
    styles: dict[str, Style] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f, skipinitialspace=True):
                name = (row.get("name") or "").strip()
                if not name or name.startswith("#"):
                    continue
                styles[name] = Style(name, row.get("prompt") or row.get("text") or "", row.get("negative_prompt") or "")
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"styles file {Path(path).name}: cannot be read ({e})") from None
    return styles


class StyleFile:
    """The styles of one file (``None``: no file — no styles, nothing can be saved). Thread-safe."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._styles: dict[str, Style] = {}

    @property
    def styles(self) -> dict[str, Style]:
        """The styles, by name, in file order (read again when the file changed)."""
        with self._lock:
            if self.path is None or not self.path.is_file():
                return {}
            stat = self.path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if stamp != self._stamp:
                self._styles, self._stamp = read_styles(self.path), stamp
            return dict(self._styles)

    def texts(self) -> dict[str, tuple[str, str]]:
        """Name → (prompt, negative prompt): what :func:`retouch.generate` takes as ``styles``."""
        return {name: (s.prompt, s.negative_prompt) for name, s in self.styles.items()}

    def save(self, style: Style) -> None:
        """Add ``style``, or replace the one of its name (``ValueError`` without a file or a name)."""
        if not style.name.strip():
            raise ValueError("style: give it a name")
        styles = self.styles
        styles[style.name] = style
        self._write(styles)

    def delete(self, name: str) -> None:
        styles = self.styles
        if styles.pop(name, None) is not None:
            self._write(styles)

    def _write(self, styles: dict[str, Style]) -> None:
        if self.path is None:
            raise ValueError("styles: this server has no styles file (start it with --styles-file PATH)")
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with self._lock:
            with open(temporary, "w", encoding="utf-8", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows({"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                                 for s in styles.values())
            temporary.replace(self.path)
            self._stamp = None
