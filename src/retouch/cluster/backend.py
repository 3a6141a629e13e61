""":class:`RayBackend`: the :class:`~retouch.serving.backend.Backend` the HTTP app uses when jobs run on a Ray
Serve deployment of :class:`~retouch.cluster.worker.Worker` replicas.

A request goes to a replica chosen by its checkpoint (``multiplexed_model_id``, see :mod:`retouch.cluster.router`);
when every replica's queue is full Serve refuses it (503, ``Retry-After``); when the replica dies mid-job the
request is sent once more, to another replica, and then it is a 503 — never a hang. Progress, interrupts and
skips go through the task registry, so they work whichever replica runs the job.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve

from retouch.serving.catalogue import CheckpointCatalogue
from retouch.serving.errors import QueueFull, Unavailable
from retouch.serving.models import ModelManager
from retouch.serving.values import JobOutcome, JobRequest, TaskLookup, TaskStatus

logger = logging.getLogger(__name__)
CALL_TIMEOUT = 30  # seconds for a registry or replica bookkeeping call


def _replica_died(error: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(error, ActorDiedError | ActorUnavailableError | RayActorError)


@dataclass
class RayBackend(CheckpointCatalogue):
    """``handle``: a Serve handle to the Worker deployment; ``registry``: the task registry actor;
    ``models``: the checkpoint catalogue (names and defaults only: nothing is loaded in the ingress)."""

    handle: Any
    registry: Any
    models: ModelManager
    closed: bool = field(default=False, init=False)

    async def run(self, request: JobRequest) -> JobOutcome:
        if self.closed:
            raise Unavailable("the server is shutting down")
        name = self.models.checkpoint_for(request.checkpoint, request.keep_checkpoint)
        await self.registry.submitted.remote(request.task_id)
        try:
            for attempt in (1, 2):
                try:
                    return await self.handle.options(multiplexed_model_id=name).run.remote(request)
                except Exception as e:
                    if _is_backpressure(e):
                        raise QueueFull() from None
                    if not _replica_died(e):
                        raise
                    logger.warning("replica died running %s (attempt %d): %s", request.task_id, attempt, e)
                    await self.registry.abandoned.remote(request.task_id)
                    await self.registry.submitted.remote(request.task_id)
            raise Unavailable(f"task {request.task_id}: the replica running it died, and so did the retry; "
                              "retry later")
        finally:
            self.registry.abandoned.remote(request.task_id)

    # -- progress and control --------------------------------------------------------------------------
    def _get(self, ref):
        return ray.get(ref, timeout=CALL_TIMEOUT)

    def current(self) -> TaskStatus | None:
        status = self._get(self.registry.current.remote())
        return _status(status) if status else None

    def lookup(self, task_id: str) -> TaskLookup:
        found = self._get(self.registry.lookup.remote(task_id))
        active = found.get("active")
        position = found.get("queue_position")
        return TaskLookup(active=_status(active) if active else None,
                          queue_position=tuple(position) if position else None, completed=bool(found.get("completed")))

    def preview(self, task_id: str | None) -> tuple[str | None, int]:
        encoded, preview_id = self._get(self.registry.preview.remote(task_id))
        return encoded, preview_id

    def pending(self) -> list[str]:
        return list(self._get(self.registry.pending.remote()))

    def interrupt(self, task_id: str | None = None) -> bool:
        return bool(self._get(self.registry.interrupt.remote(task_id)))

    def skip(self) -> None:
        self._get(self.registry.skip.remote())

    def cluster(self) -> dict[str, Any]:
        return self._get(self.registry.cluster.remote())

    # -- checkpoints (catalogue methods: CheckpointCatalogue) and networks ------------------------------
    def default_checkpoint_title(self) -> str:
        return self.models.find(self.models.default).title

    def _on_default(self, method: str) -> Any:
        name = self.models.default
        return getattr(self.handle.options(multiplexed_model_id=name), method).remote(name).result(
            timeout_s=CALL_TIMEOUT * 10)

    def embeddings(self) -> dict[str, Any]:
        return self._on_default("embeddings")

    def prompt_length(self, text: str, steps: int, options: Any, negative: bool = False) -> tuple[int, int]:
        name = self.models.default
        handle = self.handle.options(multiplexed_model_id=name)
        return tuple(handle.prompt_length.remote(name, text, steps, options, negative).result(
            timeout_s=CALL_TIMEOUT))

    def refresh_embeddings(self) -> None:
        self._on_default("refresh_networks")

    def refresh_loras(self) -> None:
        self._on_default("refresh_networks")

    def warm_up(self) -> None:
        """Load the default checkpoint on a replica now, so a broken one fails at start-up."""
        self.embeddings()

    def shutdown(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):  # the cluster may already be gone
            self.interrupt(None)


def _is_backpressure(error: BaseException) -> bool:
    from ray.serve.exceptions import BackPressureError

    return isinstance(error, BackPressureError)


def _status(s: dict[str, Any]) -> TaskStatus:
    return TaskStatus(s["id"], s["job_count"], s["job_no"], s["sampling_step"], s["sampling_steps"], False, False,
                      s.get("started_at"), s.get("preview_id", 0))


__all__ = ["RayBackend", "serve"]
