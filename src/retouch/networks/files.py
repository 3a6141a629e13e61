"""The LoRA folder: which network files there are, their names, aliases, metadata and hashes.

As A1111's Lora extension (``networks.list_available_networks``): every ``.safetensors``, ``.pt`` and
``.ckpt`` below the folder (walked in natural order) is a network named by its
file stem; a later file with the same stem replaces an earlier one. A safetensors file's metadata
``ss_output_name`` is its alias, also accepted in ``<lora:alias:…>``; an alias two files share is
"forbidden": such a name then only finds the file of that name. The hash A1111 writes in
``Lora hashes`` is the first 12 hex digits of the sha256 of the file after its safetensors header
(kohya's "addnet" hash; of the whole file for ``.pt``/``.ckpt``), or of ``sshs_model_hash`` when the
metadata carries one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retouch.models.checkpoint import CheckpointError, file_sha256, read_safetensors_metadata
from retouch.models.paths import cache_dir, walk_files

logger = logging.getLogger(__name__)

NETWORK_SUFFIXES = (".safetensors", ".pt", ".ckpt")
# A1111 sorts these metadata keys first, the rest after in file order (network.metadata_tags_order).
_METADATA_ORDER = {"ss_sd_model_name": 1, "ss_resolution": 2, "ss_clip_skip": 3, "ss_num_train_images": 10,
                   "ss_tag_frequency": 20}
_ALWAYS_FORBIDDEN = ("none", "Addams")  # A1111's forbidden_network_aliases seed
_RE_LORA_NAME = re.compile("<lora:([^:]+):")


@dataclass
class NetworkFile:
    """One network file on disk (A1111 ``NetworkOnDisk``)."""

    name: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    _hash: str | None = field(default=None, repr=False)

    @property
    def alias(self) -> str:
        return str(self.metadata.get("ss_output_name", self.name))

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix.lower() == ".safetensors"

    @property
    def sd_version(self) -> str:
        """``"SDXL"``, ``"SD2"``, ``"SD1"`` or ``"Unknown"``, from the training metadata (as A1111)."""
        if str(self.metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
            return "SDXL"
        if str(self.metadata.get("ss_v2", "")) == "True":
            return "SD2"
        return "SD1" if self.metadata else "Unknown"

    @property
    def sha256(self) -> str:
        """The full hash A1111 uses for this file (computed once, then cached on disk)."""
        if self._hash is None:
            self._hash = str(self.metadata.get("sshs_model_hash") or "") or file_sha256(
                self.path, cache_dir(), after_header=self.is_safetensors)
        return self._hash

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def stamp(self) -> tuple[int, int]:
        """Size and modification time: a changed file is read again."""
        stat = self.path.stat()
        return stat.st_size, stat.st_mtime_ns

    def as_api(self) -> dict[str, Any]:
        """The entry of ``GET /sdapi/v1/loras``."""
        return {"name": self.name, "alias": self.alias, "path": str(self.path), "metadata": self.metadata}


def read_network_file(name: str, path: Path) -> NetworkFile:
    metadata: dict[str, Any] = {}
    if path.suffix.lower() == ".safetensors":
        try:
            metadata = read_safetensors_metadata(path)
        except CheckpointError as e:
            logger.warning("%s", e)
    ordered = dict(sorted(metadata.items(), key=lambda item: _METADATA_ORDER.get(item[0], 999)))
    return NetworkFile(name, path, ordered)


@dataclass
class _Listing:
    by_name: dict[str, NetworkFile] = field(default_factory=dict)
    by_alias: dict[str, NetworkFile] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=lambda: set(_ALWAYS_FORBIDDEN))


class LoraFolder:
    """The networks of one folder (``--lora-dir``), rescanned on :meth:`refresh`.

    Thread-safe: a rescan builds a new listing and swaps it in.
    """

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder is not None else None
        self._lock = threading.Lock()
        self._listing = _Listing()
        self.refresh()

    def refresh(self) -> None:
        """Rescan the folder (``POST /sdapi/v1/refresh-loras``)."""
        listing = _Listing()
        if self.folder is not None:
            for path in walk_files(self.folder, NETWORK_SUFFIXES):
                entry = read_network_file(path.stem, path)
                listing.by_name[entry.name] = entry
                if entry.alias in listing.by_alias:
                    listing.forbidden.add(entry.alias.lower())
                listing.by_alias[entry.name] = entry
                listing.by_alias[entry.alias] = entry
        with self._lock:
            self._listing = listing

    @property
    def files(self) -> list[NetworkFile]:
        """Every network, in scan order."""
        return list(self._listing.by_name.values())

    @property
    def names(self) -> list[str]:
        return list(self._listing.by_name)

    @property
    def aliases(self) -> dict[str, str]:
        """Alias → file name, for the files whose alias differs from their name."""
        return {f.alias: f.name for f in self.files if f.alias != f.name}

    def lookup(self, name: str) -> NetworkFile | None:
        """The file a prompt's ``<lora:name:…>`` means, without rescanning."""
        listing = self._listing
        if name.lower() in listing.forbidden:
            return listing.by_name.get(name)
        return listing.by_alias.get(name)

    def preferred_name(self, entry: NetworkFile) -> str:
        """The name A1111 writes for a network: its alias, unless that alias is ambiguous."""
        return entry.name if entry.alias.lower() in self._listing.forbidden else entry.alias

    def restore_names(self, prompt: str, lora_hashes: str | None) -> str:
        """A pasted infotext's prompt with each ``<lora:name:`` whose hash ``Lora hashes`` gives renamed to the
        network that has that hash here (A1111's ``infotext_pasted`` for Lora: a renamed file still matches)."""
        if not lora_hashes or self.folder is None:
            return prompt
        hashes = {}
        for entry in lora_hashes.split(","):
            name, colon, short_hash = entry.partition(":")
            if colon:
                hashes[name.strip().replace(",", "")] = short_hash.strip()

        def rename(m: re.Match) -> str:
            short_hash = hashes.get(m.group(1))
            found = self.by_short_hash(short_hash) if short_hash else None
            return f"<lora:{self.preferred_name(found)}:" if found is not None else m.group(0)

        return _RE_LORA_NAME.sub(rename, prompt)

    def by_short_hash(self, short_hash: str) -> NetworkFile | None:
        """The network whose hash starts with ``short_hash`` (reading an infotext's ``Lora hashes``)."""
        for entry in self.files:
            if entry.short_hash == short_hash[:12]:
                return entry
        return None
