"""What the HTTP layer needs from whatever runs the jobs: the :class:`Backend` interface, the values that
cross it, and :class:`LocalBackend` — one worker thread and a queue in this process.

Everything that crosses the interface is a plain, picklable value (a validated job, PIL images,
strings), so a backend may run jobs in other processes or on other machines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import torch
from PIL import Image

from retouch.control import JobControl
from retouch.models.model import Model
from retouch.options import Options
from retouch.outputs import Outputs, is_disk_full
from retouch.params import Img2ImgJob
from retouch.pipeline import generate
from retouch.processed import Processed
from retouch.server.checkpoints import ModelManager
from retouch.server.images import ACCEPTED_FORMATS, decode_opened
from retouch.server.jobs import Cancelled, DuplicateTask, JobQueue, QueueFull, Task, Unavailable
from retouch.server.previews import preview_png_b64, wants_preview

__all__ = ["Backend", "Cancelled", "CheckpointCatalogue", "CheckpointInfo", "DuplicateTask", "JobOutcome", "JobRequest", "LocalBackend", "QueueFull",
           "RequestImages", "TaskLookup", "TaskStatus", "Unavailable", "run_job", "with_images"]


@dataclass(frozen=True)
class RequestImages:
    """A request's images as the client sent them (encoded): they are decoded when the job starts, so a
    waiting request holds bytes, not pixels, and the request pickles small."""

    init_images: list[bytes]
    mask: bytes | None = None
    latent_mask: bytes | None = None


@dataclass(frozen=True)
class JobRequest:
    """One validated img2img request, ready to run.

    ``options``: the server's options with the request's ``override_settings`` applied;
    ``checkpoint``: the requested ``sd_model_checkpoint`` (None: the default); ``keep_checkpoint``:
    make it the default afterwards (``override_settings_restore_afterwards: false``).
    """

    task_id: str
    job: Img2ImgJob  # validated; its image fields are empty until the worker decodes ``images``
    images: RequestImages
    options: Options
    checkpoint: str | None = None
    keep_checkpoint: bool = False
    outdir: str | None = None  # save samples and grid here (None: don't save)
    grid: bool = False
    filename_stem: str | None = None  # name samples after an input file (a folder batch), not their seed


@dataclass(frozen=True)
class JobOutcome:
    images: list[Image.Image]  # with their infotext in ``info["parameters"]``
    info: str  # A1111's info JSON (``Processed.js()``)
    job_timestamp: str
    queued_s: float = 0.0
    ran_s: float = 0.0
    save_error: str | None = None  # why saving failed (the images are still here)
    disk_full: bool = False


@dataclass(frozen=True)
class TaskStatus:
    """A running task's progress (A1111's ``shared.state``)."""

    id: str
    job_count: int
    job_no: int
    sampling_step: int
    sampling_steps: int
    skipped: bool
    interrupted: bool
    started_at: float | None
    preview_id: int = 0

    @property
    def progress(self) -> float:
        value = 0.0
        if self.job_count > 0:
            value += self.job_no / self.job_count
            if self.sampling_steps > 0:
                value += self.sampling_step / self.sampling_steps / self.job_count
        return min(value, 1.0)


@dataclass(frozen=True)
class TaskLookup:
    """Where a task id stands: running (``active``), waiting (``queue_position`` = (place, of)), or done."""

    active: TaskStatus | None = None
    queue_position: tuple[int, int] | None = None
    completed: bool = False


@dataclass(frozen=True)
class CheckpointInfo:
    title: str
    model_name: str
    hash: str | None
    filename: str
    sha256: str | None = None
    config: str | None = None  # the yaml beside the checkpoint, as A1111 lists it


class Backend(Protocol):
    async def run(self, request: JobRequest) -> JobOutcome:
        """Run a job; raises :class:`QueueFull` (no room), :class:`Cancelled` (removed while queued)."""
        ...

    def current(self) -> TaskStatus | None: ...

    def lookup(self, task_id: str) -> TaskLookup: ...

    def preview(self, task_id: str | None) -> tuple[str | None, int]:
        """The latest live preview of a running task (base64 PNG or None) and its id."""
        ...

    def pending(self) -> list[str]: ...

    def interrupt(self, task_id: str | None = None) -> bool: ...

    def skip(self) -> None: ...

    def checkpoints(self) -> list[CheckpointInfo]: ...

    def refresh_checkpoints(self) -> None: ...

    def find_checkpoint(self, name: str) -> str:
        """The checkpoint's name for ``name`` (a title, file name, stem or hash); ValueError if unknown."""
        ...

    def set_default_checkpoint(self, name: str) -> None: ...

    def vaes(self) -> dict[str, Path]:
        """The separate VAEs ``sd_vae`` may name, by file name."""
        ...

    def find_vae(self, name: str) -> str:
        """``name`` if ``sd_vae`` may be set to it; ValueError naming the VAEs there are if not."""
        ...

    def default_checkpoint_title(self) -> str: ...

    def default_checkpoint(self) -> str:
        """The name (as in :meth:`checkpoints`) of the checkpoint a request without one runs on."""
        ...

    def memory(self) -> dict[str, Any]: ...

    def embeddings(self) -> dict[str, Any]:
        """``GET /sdapi/v1/embeddings`` for the current model."""
        ...

    def refresh_embeddings(self) -> None: ...

    def refresh_loras(self) -> None:
        """Rescan the LoRA folder where jobs run."""
        ...

    def warm_up(self) -> None:
        """Load the default checkpoint now (a broken one fails at start-up, not on every request)."""
        ...

    def shutdown(self) -> None:
        """Refuse new jobs, cancel queued ones, interrupt the running one."""
        ...


class CheckpointCatalogue:
    """The :class:`Backend` methods that only read or set the checkpoint catalogue ``self.models`` (shared by the
    local and the Ray backend)."""

    models: ModelManager

    def checkpoints(self) -> list[CheckpointInfo]:
        return [CheckpointInfo(c.title, c.model_name, c.short_hash, str(c.path), c.sha256, c.config)
                for c in self.models.checkpoints.values()]

    def refresh_checkpoints(self) -> None:
        self.models.refresh()

    def find_checkpoint(self, name: str) -> str:
        return self.models.find(name).name

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
        return preview_png_b64(task.preview_latent), task.preview_id

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


def run_request(models: ModelManager, request: JobRequest, control: JobControl, queued_s: float = 0.0) -> JobOutcome:
    """The worker's part of a request: pick the model, run the job, build A1111's response values."""
    model = models.get(request.checkpoint, vae=request.options.sd_vae)
    if request.checkpoint and request.keep_checkpoint:
        models.default = models.find(request.checkpoint).name
    return run_job(model, request, control, queued_s)


def run_job(model: Model, request: JobRequest, control: JobControl, queued_s: float = 0.0) -> JobOutcome:
    """Run a request's job on ``model``; A1111's response values."""
    started = time.perf_counter()
    job = with_images(request)
    outputs = Outputs(samples_dir=request.outdir, grids_dir=request.outdir, grid=request.grid,
                      filename_stem=request.filename_stem)
    result = generate(job, model, options=request.options, control=control, outputs=outputs)
    info = Processed.from_result(job.params, model, request.options, result).js()
    error = result.save_error
    return JobOutcome(result.images, info, result.job_timestamp, queued_s=queued_s,
                      ran_s=time.perf_counter() - started,
                      save_error=f"could not save images: {error.strerror or error}" if error else None,
                      disk_full=bool(error and is_disk_full(error)))


def with_images(request: JobRequest) -> Img2ImgJob:
    """The request's job with its images decoded (``ValueError`` naming the field for broken data)."""
    images = request.images

    def decode(data: bytes, field: str) -> Image.Image:
        return decode_opened(Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS), field)

    params = dataclasses.replace(
        request.job.params,
        init_images=[decode(data, f"init_images[{i}]") for i, data in enumerate(images.init_images)],
        image_mask=decode(images.mask, "mask") if images.mask is not None else None,
        latent_mask=decode(images.latent_mask, "latent_mask") if images.latent_mask is not None else None)
    return dataclasses.replace(request.job, params=params)


def _status(task: Task) -> TaskStatus:
    c = task.control
    return TaskStatus(task.id, c.job_count, c.job_no, c.sampling_step, c.sampling_steps, c.skipped, c.interrupted,
                      task.started_at, task.preview_id)


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
