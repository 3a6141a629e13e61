""":class:`LocalBackend`: jobs run one at a time on a worker thread of this process, in the order they arrive."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from retouch.control import JobControl
from retouch.pipeline.prompts import prompt_length
from retouch.serving.catalogue import CheckpointCatalogue
from retouch.serving.models import ModelManager
from retouch.serving.previews import preview_png_b64, wants_preview
from retouch.serving.queue import JobQueue, Task
from retouch.serving.run import run_request
from retouch.serving.values import JobOutcome, JobRequest, TaskLookup, TaskStatus


@dataclass
class LocalBackend(CheckpointCatalogue):
    """Jobs run one at a time on a worker thread of this process, in the order they arrive."""

    models: ModelManager
    max_queue: int = 16
    queue: JobQueue = field(init=False)

    def __post_init__(self) -> None:
        self.queue = JobQueue(self.max_queue)

    async def run(self, request: JobRequest) -> JobOutcome:
        submitted = time.perf_counter()
        options = request.options

        def on_step(task: Task, info: dict) -> None:
            if wants_preview(options, info["i"]) and isinstance(info.get("denoised"), torch.Tensor):
                task.preview_latent = info["denoised"][:1].detach().clone()
                task.preview_format = task.control.latent_format
                task.preview_id += 1

        task = self.queue.submit(request.task_id, lambda control: self._work(request, control, submitted),
                                 on_step=on_step)
        return await asyncio.wrap_future(task.future)

    def _work(self, request: JobRequest, control: JobControl, submitted: float) -> JobOutcome:
        started = time.perf_counter()
        return run_request(self.models, request, control, queued_s=started - submitted)

    def current(self) -> TaskStatus | None:
        task = self.queue.current
        return _status(task) if task is not None else None

    def lookup(self, task_id: str) -> TaskLookup:
        task = self.queue.current
        if task is not None and task.id == task_id:
            return TaskLookup(active=_status(task))
        return TaskLookup(queue_position=self.queue.queue_position(task_id), completed=task_id in self.queue.finished)

    def preview(self, task_id: str | None) -> tuple[str | None, int]:
        task = self.queue.current
        if task is None or (task_id is not None and task.id != task_id) or task.preview_latent is None:
            return None, task.preview_id if task is not None else -1
        return preview_png_b64(task.preview_latent, task.preview_format), task.preview_id

    def pending(self) -> list[str]:
        return list(self.queue.pending)

    def interrupt(self, task_id: str | None = None) -> bool:
        return self.queue.interrupt(task_id)

    def skip(self) -> None:
        self.queue.skip()

    def default_checkpoint_title(self) -> str:
        return self.models.loaded_title

    def embeddings(self) -> dict[str, Any]:
        # the model jobs last ran on, as A1111 lists its loaded model's: never a load (or a switch) of its own
        database = (self.models.loaded or self.models.get()).embeddings
        database.check_for_changes()
        return {"loaded": {name: e.as_api() for name, e in database.loaded.items()},
                "skipped": {name: e.as_api() for name, e in database.skipped.items()}}

    def prompt_length(self, text: str, steps: int, options: Any, negative: bool = False) -> tuple[int, int]:
        return prompt_length(self.models.loaded or self.models.get(), text, steps, options, negative=negative)

    def refresh_embeddings(self) -> None:
        (self.models.loaded or self.models.get()).embeddings.refresh()

    def refresh_loras(self) -> None:
        model = self.models.loaded
        if model is not None:
            model.loras.refresh()

    def warm_up(self) -> None:
        self.models.get()

    def shutdown(self) -> None:
        self.queue.shutdown()


def _status(task: Task) -> TaskStatus:
    c = task.control
    return TaskStatus(task.id, c.job_count, c.job_no, c.sampling_step, c.sampling_steps, c.skipped, c.interrupted,
                      task.started_at, task.preview_id)
