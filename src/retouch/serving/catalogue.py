"""The catalogue methods every backend answers the same way from its :class:`ModelManager` (checkpoints, VAEs,
the default checkpoint, memory): written once for the local and the Ray backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import torch

from retouch.serving.models import ModelManager
from retouch.serving.values import CheckpointInfo


class CheckpointCatalogue:
    """The :class:`Backend` methods that only read or set the checkpoint catalogue ``self.models`` (shared by the
    local and the Ray backend)."""

    models: ModelManager

    def checkpoints(self) -> list[CheckpointInfo]:
        return [CheckpointInfo(c.title, c.model_name, c.short_hash, str(c.path), c.sha256, c.config)
                for c in self.models.checkpoints.values()]

    def refresh_checkpoints(self) -> None:
        self.models.refresh()

    def find_checkpoint(self, name: str, field: str = "override_settings.sd_model_checkpoint") -> str:
        return self.models.find(name, field).name

    def vaes(self) -> dict[str, Path]:
        return self.models.vaes

    def find_vae(self, name: str) -> str:
        return self.models.find_vae(name)

    def set_default_checkpoint(self, name: str) -> None:
        self.models.default = self.models.find(name).name

    def default_checkpoint(self) -> str:
        return self.models.default

    def memory(self) -> dict[str, Any]:
        return memory_report()


def memory_report() -> dict[str, Any]:
    """A1111's ``/sdapi/v1/memory``: this process's RAM and, when there is one, the GPU's."""
    process = psutil.Process()
    vm = psutil.virtual_memory()
    ram = {"free": vm.available, "used": process.memory_info().rss, "total": vm.total}
    cuda: dict[str, Any] = {"error": "no CUDA device"}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        cuda = {"system": {"free": free, "used": total - free, "total": total}}
    return {"ram": ram, "cuda": cuda}
