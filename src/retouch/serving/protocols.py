"""What every face (HTTP, the page, the cluster's ingress) needs from whatever runs the jobs: two small
interfaces, :class:`Jobs` (submit, progress, interrupt, skip) and :class:`Catalogue` (what a request may name),
and :class:`Backend`, both at once plus start-up and shut-down. The local queue and the Ray deployment are the
two implementations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from retouch.serving.values import CheckpointInfo, JobOutcome, JobRequest, TaskLookup, TaskStatus


class Jobs(Protocol):
    async def run(self, request: JobRequest) -> JobOutcome:
        """Run a job; raises :class:`~retouch.serving.errors.QueueFull` (no room), ``Cancelled`` (removed while
        queued), ``DuplicateTask``, ``Unavailable``."""
        ...

    def current(self) -> TaskStatus | None: ...

    def lookup(self, task_id: str) -> TaskLookup: ...

    def preview(self, task_id: str | None) -> tuple[str | None, int]:
        """The latest live preview of a running task (base64 PNG or None) and its id."""
        ...

    def pending(self) -> list[str]: ...

    def interrupt(self, task_id: str | None = None) -> bool: ...

    def skip(self) -> None: ...


class Catalogue(Protocol):
    def checkpoints(self) -> list[CheckpointInfo]: ...

    def refresh_checkpoints(self) -> None: ...

    def find_checkpoint(self, name: str, field: str = "override_settings.sd_model_checkpoint") -> str:
        """The checkpoint's name for ``name`` (a title, file name, stem or hash); ValueError naming ``field`` if
        unknown."""
        ...

    def default_checkpoint(self) -> str:
        """The name (as in :meth:`checkpoints`) of the checkpoint a request without one runs on."""
        ...

    def default_checkpoint_title(self) -> str: ...

    def set_default_checkpoint(self, name: str) -> None: ...

    def vaes(self) -> dict[str, Path]:
        """The separate VAEs ``sd_vae`` may name, by file name."""
        ...

    def find_vae(self, name: str) -> str:
        """``name`` if ``sd_vae`` may be set to it; ValueError naming the VAEs there are if not."""
        ...

    def embeddings(self) -> dict[str, Any]:
        """``GET /sdapi/v1/embeddings`` for the model jobs run on."""
        ...

    def refresh_embeddings(self) -> None: ...

    def refresh_loras(self) -> None:
        """Rescan the LoRA folder where jobs run."""
        ...

    def memory(self) -> dict[str, Any]: ...

    def prompt_length(self, text: str, steps: int, options: Any, negative: bool = False) -> tuple[int, int]:
        """A1111's token counter for a prompt on the model jobs run on: ``(tokens, 75-token target)``."""
        ...


class Backend(Jobs, Catalogue, Protocol):
    def warm_up(self) -> None:
        """Load the default checkpoint now (a broken one fails at start-up, not on every request)."""
        ...

    def shutdown(self) -> None:
        """Refuse new jobs, cancel queued ones, interrupt the running one."""
        ...
