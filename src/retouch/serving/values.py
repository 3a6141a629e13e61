"""The values that cross the serving layer: a validated request, its outcome, a task's progress, a checkpoint's
listing. All plain and picklable (validated parameters, encoded images, strings), so a job may run in another
process or on another machine (the Ray replicas)."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from retouch.options import Options
from retouch.params import Job


@dataclass(frozen=True)
class RequestImages:
    """A request's images as the client sent them (encoded): they are decoded when the job starts, so a
    waiting request holds bytes, not pixels, and the request pickles small."""

    init_images: list[bytes]
    mask: bytes | None = None
    latent_mask: bytes | None = None


@dataclass(frozen=True)
class JobRequest:
    """One validated txt2img or img2img request, ready to run.

    ``options``: the server's options with the request's ``override_settings`` applied;
    ``checkpoint``: the requested ``sd_model_checkpoint`` (None: the default); ``keep_checkpoint``:
    make it the default afterwards (``override_settings_restore_afterwards: false``).
    """

    task_id: str
    job: Job  # validated; its image fields are empty until the worker decodes ``images``
    images: RequestImages
    options: Options
    checkpoint: str | None = None
    keep_checkpoint: bool = False
    outdir: str | None = None  # save samples and grid here (None: don't save)
    grid: bool = False
    filename_stem: str | None = None
    styles: dict[str, tuple[str, str]] = field(default_factory=dict)  # the named styles' texts (styles.csv)
    other_checkpoints: tuple[str, ...] = ()  # the refiner / hires checkpoint the job switches to
    script: tuple[str, dict] | None = None  # an img2img script's title and its parsed arguments


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
