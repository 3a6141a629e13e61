"""Progress, queue and cancellation: ``/sdapi/v1/progress``, ``/internal/progress``, pending tasks,
interrupt and skip."""

from __future__ import annotations

import time

from fastapi import APIRouter

from retouch.server.routes import State
from retouch.server.routing import GuardedRoute
from retouch.serving.errors import RequestError
from retouch.serving.schemas import InterruptRequest, ProgressRequest
from retouch.serving.values import TaskStatus

router = APIRouter(route_class=GuardedRoute)


def _idle_state(state: State) -> dict:
    return {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
            "job_timestamp": state.job_timestamp, "job_no": 0, "sampling_step": 0, "sampling_steps": 0}


@router.get("/sdapi/v1/progress")
async def progress(state: State, skip_current_image: bool = False):
    status = state.backend.current()
    info = _idle_state(state)
    if status is None or status.job_count <= 0:
        return {"progress": 0.0, "eta_relative": 0.0, "state": info, "current_image": None, "textinfo": None}
    info.update(skipped=status.skipped, interrupted=status.interrupted, job=status.id, job_count=status.job_count,
                job_no=status.job_no, sampling_step=status.sampling_step, sampling_steps=status.sampling_steps)
    value = status.progress + 0.01
    elapsed = _elapsed(status)
    image = None if skip_current_image else state.backend.preview(status.id)[0]
    return {"progress": min(value, 1.0), "eta_relative": elapsed / value - elapsed, "state": info,
            "current_image": image, "textinfo": None}


@router.post("/internal/progress")
async def internal_progress(req: ProgressRequest, state: State):
    found = state.backend.lookup(req.id_task or "")
    status = found.active
    if status is None:
        position = found.queue_position
        text = f"In queue: {position[0]}/{position[1]}" if position else "Waiting..."
        return {"active": False, "queued": position is not None, "completed": found.completed, "progress": None,
                "eta": None, "live_preview": None, "id_live_preview": -1, "textinfo": text,
                "queue_position": position[0] if position else None}
    value = status.progress
    elapsed = _elapsed(status)
    preview, preview_id = None, req.id_live_preview
    if req.live_preview and status.preview_id != req.id_live_preview:
        image, current_id = state.backend.preview(status.id)
        if image:
            preview, preview_id = "data:image/png;base64," + image, current_id
    return {"active": True, "queued": False, "completed": False, "progress": value,
            "eta": elapsed / value - elapsed if value > 0 else None, "live_preview": preview,
            "id_live_preview": preview_id, "textinfo": None, "queue_position": 0}


def _elapsed(status: TaskStatus) -> float:
    return time.time() - (status.started_at or time.time())


@router.get("/internal/pending-tasks")
async def pending_tasks(state: State):
    ids = state.backend.pending()
    return {"size": len(ids), "tasks": ids}


@router.post("/sdapi/v1/interrupt")
async def interrupt(state: State, req: InterruptRequest | None = None, id_task: str | None = None):
    task_id = id_task or (req.id_task if req else None)
    found = state.backend.interrupt(task_id)
    if task_id and not found:
        raise RequestError(404, f"no queued or running task {task_id!r}")
    return {}


@router.post("/sdapi/v1/skip")
async def skip(state: State):
    state.backend.skip()
    return {}
