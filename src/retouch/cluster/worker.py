"""The Serve deployment that runs jobs: each replica holds up to K checkpoints (Serve's model multiplexing; requests
are routed to replicas by :class:`~retouch.cluster.router.CheckpointRouter`) and runs one job at a time, exactly as
``retouch serve`` runs it (:func:`retouch.serving.backend.run_job`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray import serve

from retouch.control import JobControl
from retouch.serving.errors import Cancelled
from retouch.serving.models import ModelManager
from retouch.serving.previews import preview_png_b64, wants_preview
from retouch.serving.run import run_job
from retouch.serving.values import JobOutcome, JobRequest

FLAG_POLL_SECONDS = 0.25


class Worker:
    """One replica. ``catalogue``: what :class:`ModelManager` needs to find checkpoints (``ckpt``, ``ckpt_dir``,
    ``load_kwargs``, ``vae_tiling``); ``registry``: the :class:`~retouch.cluster.registry.TaskRegistry` actor."""

    def __init__(self, catalogue: dict[str, Any], registry: Any, models_per_replica: int, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        self.models = ModelManager(**catalogue)
        self.registry = registry
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._lock = threading.Lock()  # one job at a time in this replica

    async def get_model(self, name: str):
        """The loaded checkpoint ``name`` (see :func:`worker_class`: Serve's multiplexing wraps this)."""
        raise NotImplementedError

    async def _load(self, name: str):
        """Load a checkpoint (when Serve's multiplexing has no copy here); Serve evicts the least recently used."""
        from retouch import load_model

        checkpoint = self.models.find(name)
        started = time.perf_counter()
        model = await asyncio.to_thread(load_model, checkpoint.path, **self.models.load_kwargs)
        model.vae_tiling = self.models.vae_tiling
        self.registry.loaded.remote(self.replica, checkpoint.name, time.perf_counter() - started)
        return model

    async def run(self, request: JobRequest) -> JobOutcome:
        name = serve.get_multiplexed_model_id() or self.models.default
        model = await self.get_model(name)
        submitted = time.perf_counter()
        control = JobControl(on_step=self._reporter(request))
        try:
            return await asyncio.to_thread(self._run_locked, model, name, request, control, submitted)
        finally:
            self.registry.done.remote(request.task_id)

    def _run_locked(self, model, name: str, request: JobRequest, control: JobControl,
                    submitted: float) -> JobOutcome:
        with self._lock:  # waiting here is this replica's queue: the task counts as started once it has the lock
            if not ray.get(self.registry.started.remote(request.task_id, self.replica, os.getpid()), timeout=30):
                raise Cancelled("the job was interrupted before it started")
            job_model = self.models.with_vae(model, name, request.options.sd_vae)
            with self._watching(request.task_id, control):
                resources = self.models.resources(job_model, name, request.options.sd_vae)
                return run_job(job_model, request, control, time.perf_counter() - submitted, resources)

    @contextlib.contextmanager
    def _watching(self, task_id: str, control: JobControl) -> Iterator[None]:
        """Poll the task's flags every :data:`FLAG_POLL_SECONDS` while it runs: an interrupt then lands within
        one convolution in every phase (VAE passes too), not only at the next sampling step's report."""
        done = threading.Event()

        def watch() -> None:
            while not done.wait(FLAG_POLL_SECONDS):
                try:
                    take_flags(control, ray.get(self.registry.progress.remote(task_id, {}), timeout=30))
                except Exception:  # noqa: BLE001 - a lost poll is retried; the step reports poll too
                    continue

        watcher = threading.Thread(target=watch, name="retouch-flags", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def _reporter(self, request: JobRequest):
        """Each sampling step: report progress (and a preview when due) and pick up interrupt/skip flags."""
        options = request.options

        def on_step(control: JobControl, info: dict[str, Any]) -> None:
            preview = None
            denoised = info.get("denoised")
            if wants_preview(options, info["i"]) and denoised is not None:
                preview = preview_png_b64(denoised[:1].detach().float(), control.latent_format)
            fields = {"job_count": control.job_count, "job_no": control.job_no,
                      "sampling_step": control.sampling_step, "sampling_steps": control.sampling_steps}
            take_flags(control, ray.get(self.registry.progress.remote(request.task_id, fields, preview), timeout=30))

        return on_step

    def pid(self) -> int:
        return os.getpid()

    async def embeddings(self, name: str) -> dict[str, Any]:
        database = (await self.get_model(name)).embeddings
        database.check_for_changes()
        return {"loaded": {n: e.as_api() for n, e in database.loaded.items()},
                "skipped": {n: e.as_api() for n, e in database.skipped.items()}}

    async def prompt_length(self, name: str, text: str, steps: int, options: Any, negative: bool) -> tuple[int, int]:
        from retouch.pipeline.prompts import prompt_length

        model = await self.get_model(name)
        return await asyncio.to_thread(prompt_length, model, text, steps, options, negative=negative)

    async def refresh_networks(self, name: str) -> None:
        model = await self.get_model(name)
        model.embeddings.refresh()
        model.loras.refresh()


def take_flags(control: JobControl, flags: dict[str, Any]) -> None:
    """Apply the registry's interrupt/skip flags for a task to its running job."""
    while control.interrupts < flags.get("interrupts", 0):
        control.interrupt()
    control.skipped = control.skipped or flags["skipped"]


def worker_class(models_per_replica: int) -> type[Worker]:
    """:class:`Worker` whose :meth:`~Worker.get_model` keeps up to ``models_per_replica`` checkpoints
    (Serve's ``multiplexed`` takes the bound as a decorator argument, so the class is made per deployment)."""

    class MultiplexedWorker(Worker):
        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def get_model(self, name: str):
            return await self._load(name)

    MultiplexedWorker.__name__ = MultiplexedWorker.__qualname__ = "Worker"
    return MultiplexedWorker
