"""Where every task of the cluster stands, in one small Ray actor: the ingress registers a task when it is
submitted, the replica that runs it reports its progress, and interrupts/skips by task id are left here for
that replica to pick up. This is what makes ``/sdapi/v1/progress``, ``/internal/progress`` and
``/sdapi/v1/interrupt`` work whichever replica runs the job.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

FINISHED_KEPT = 1024  # finished task ids remembered for /internal/progress


class TaskRegistry:
    """Plain class; :func:`registry_actor` makes it a Ray actor. All methods are cheap and never block."""

    def __init__(self) -> None:
        self.waiting: OrderedDict[str, float] = OrderedDict()  # submitted, not started: task id → time
        self.running: dict[str, dict[str, Any]] = {}  # task id → status (replica, pid, progress fields)
        self.flags: dict[str, dict[str, Any]] = {}  # task id → {"interrupted", "interrupts", "skipped"}
        self.previews: dict[str, tuple[str, int]] = {}
        self.finished: OrderedDict[str, None] = OrderedDict()
        self.loads: list[dict[str, Any]] = []  # every model load: replica, checkpoint, seconds

    # -- the ingress -----------------------------------------------------------------------------
    def submitted(self, task_id: str) -> None:
        self.waiting[task_id] = time.time()

    def abandoned(self, task_id: str) -> None:
        """The request ended without the task finishing on a replica (refused, failed, retried elsewhere)."""
        self.waiting.pop(task_id, None)
        self.running.pop(task_id, None)
        self.flags.pop(task_id, None)
        self.previews.pop(task_id, None)

    def interrupt(self, task_id: str | None) -> bool:
        """Interrupt one task (None: every running task). False when ``task_id`` is unknown."""
        if task_id is None:
            for running in self.running:
                self._interrupt(running)
            return True
        if task_id in self.running or task_id in self.waiting:
            self._interrupt(task_id)
            return True
        return False

    def _interrupt(self, task_id: str) -> None:
        flags = self.flags.setdefault(task_id, {})
        flags["interrupted"] = True
        flags["interrupts"] = flags.get("interrupts", 0) + 1  # a second one also stops the partial decode

    def skip(self) -> None:
        for running in self.running:
            self.flags.setdefault(running, {})["skipped"] = True

    def lookup(self, task_id: str) -> dict[str, Any]:
        if task_id in self.running:
            return {"active": self.running[task_id]}
        if task_id in self.waiting:
            order = list(self.waiting)
            return {"queue_position": (order.index(task_id) + 1, len(order))}
        return {"completed": task_id in self.finished}

    def current(self) -> dict[str, Any] | None:
        """The running task that started first (A1111 has one; a cluster may run several)."""
        if not self.running:
            return None
        return min(self.running.values(), key=lambda s: s.get("started_at") or 0.0)

    def pending(self) -> list[str]:
        return list(self.waiting)

    def preview(self, task_id: str | None) -> tuple[str | None, int]:
        if task_id is None:
            current = self.current()
            task_id = current["id"] if current else None
        if task_id is None or task_id not in self.previews:
            return None, -1
        return self.previews[task_id]

    def cluster(self) -> dict[str, Any]:
        return {"running": list(self.running.values()), "waiting": list(self.waiting), "loads": list(self.loads)}

    # -- the replicas ------------------------------------------------------------------------------
    def started(self, task_id: str, replica: str, pid: int) -> bool:
        """A replica starts the task; False when it was interrupted while it waited (it is then not run)."""
        self.waiting.pop(task_id, None)
        if self.flags.get(task_id, {}).get("interrupted"):
            return False
        self.running[task_id] = {"id": task_id, "replica": replica, "pid": pid, "started_at": time.time(),
                                 "job_count": -1, "job_no": 0, "sampling_step": 0, "sampling_steps": 0,
                                 "preview_id": 0}
        return True

    def progress(self, task_id: str, fields: dict[str, Any], preview: str | None = None) -> dict[str, bool]:
        """A step's progress; answers the task's interrupt/skip flags (the replica's only poll)."""
        status = self.running.get(task_id)
        if status is not None:
            status.update(fields)
            if preview is not None:
                status["preview_id"] += 1
                self.previews[task_id] = (preview, status["preview_id"])
        flags = self.flags.get(task_id, {})
        skipped = bool(flags.get("skipped"))
        if skipped:
            flags["skipped"] = False  # a skip ends one image's sampling, once
        return {"interrupted": flags.get("interrupted", False), "interrupts": flags.get("interrupts", 0),
                "skipped": skipped}

    def done(self, task_id: str) -> None:
        self.abandoned(task_id)
        self.finished[task_id] = None
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)

    def loaded(self, replica: str, checkpoint: str, seconds: float) -> None:
        self.loads.append({"replica": replica, "checkpoint": checkpoint, "seconds": seconds})


def registry_actor(name: str, namespace: str):
    """The cluster's registry: found by name, or created (one per Serve application)."""
    import ray

    remote = ray.remote(num_cpus=0, max_restarts=-1)(TaskRegistry)
    return remote.options(name=name, namespace=namespace, get_if_exists=True, lifetime="detached").remote()
