"""The job queue: one worker thread runs jobs in order; requests wait without blocking the server.

Each task has an id (``force_task_id`` or ``task(img2img-XXXXXXX)``), a :class:`JobControl` for
progress and interruption, and a future the HTTP handler awaits. A full queue refuses new work
(the handler answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import queue
import random
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from retouch.control import JobControl
from retouch.serving.errors import Cancelled, DuplicateTask, QueueFull

logger = logging.getLogger(__name__)
FINISHED_KEPT = 16


def new_task_id() -> str:
    return "task(img2img-" + "".join(random.choices(string.ascii_uppercase + string.digits, k=7)) + ")"


@dataclass
class Task:
    id: str
    run: Callable[[JobControl], Any]
    control: JobControl = field(default_factory=JobControl)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    preview_latent: torch.Tensor | None = None
    preview_format: Any = None  # the LatentFormat of preview_latent
    preview_id: int = 0
    cancelled: bool = False


class JobQueue:
    def __init__(self, max_queue: int = 16):
        self.max_queue = max_queue
        self._queue: queue.Queue[Task | None] = queue.Queue()
        self._lock = threading.Lock()
        self.pending: OrderedDict[str, Task] = OrderedDict()
        self.current: Task | None = None
        self.finished: OrderedDict[str, float] = OrderedDict()
        self.closed = False
        self._thread = threading.Thread(target=self._work, name="retouch-worker", daemon=True)
        self._thread.start()

    def submit(self, task_id: str, run: Callable[[JobControl], Any],
               on_step: Callable[[Task, dict], None] | None = None) -> Task:
        """Queue ``run(control)``; ``on_step(task, info)`` is attached before the task can start."""
        task = Task(task_id, run)
        if on_step is not None:
            task.control.on_step = lambda control, info: on_step(task, info)
        with self._lock:
            if self.closed:
                raise QueueFull
            if task_id in self.pending or (self.current is not None and self.current.id == task_id):
                raise DuplicateTask(f"a task with id {task_id!r} is already queued or running; use another "
                                    "force_task_id")
            if len(self.pending) >= self.max_queue:
                raise QueueFull
            self.pending[task_id] = task
        self._queue.put(task)
        return task

    def queue_position(self, task_id: str) -> tuple[int, int] | None:
        with self._lock:
            ids = list(self.pending)
        return (ids.index(task_id) + 1, len(ids)) if task_id in ids else None

    def interrupt(self, task_id: str | None = None) -> bool:
        """Interrupt the running task (``task_id`` None or matching) or cancel a queued one."""
        with self._lock:
            current = self.current
            if task_id is None or (current is not None and current.id == task_id):
                if current is None:
                    return False
                current.control.interrupt()
                return True
            task = self.pending.get(task_id)
            if task is None:
                return False
            task.cancelled = True
            return True

    def skip(self) -> None:
        with self._lock:
            if self.current is not None:
                self.current.control.skipped = True

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            with self._lock:
                self.pending.pop(task.id, None)
                if task.cancelled:
                    if not task.future.done():
                        task.future.set_exception(Cancelled("the job was interrupted before it started"))
                    continue
                self.current = task
            task.started_at = time.time()
            try:
                task.future.set_result(task.run(task.control))
            except BaseException as e:  # noqa: BLE001 - every failure goes back to its request
                task.future.set_exception(e.with_traceback(None))
                del e
                gc.collect()  # a failed job's frames may hold tensors in reference cycles: free them now
            finally:
                with self._lock:
                    self.current = None
                    self.finished[task.id] = time.time()
                    while len(self.finished) > FINISHED_KEPT:
                        self.finished.popitem(last=False)

    def shutdown(self) -> None:
        """Refuse new tasks, cancel the queued ones and interrupt the running one (a graceful exit)."""
        with self._lock:
            self.closed = True
            for task in self.pending.values():
                task.cancelled = True
                if not task.future.done():
                    task.future.set_exception(Cancelled("the server is shutting down"))
            if self.current is not None:
                self.current.control.interrupt()

    def stop(self) -> None:
        self._queue.put(None)
