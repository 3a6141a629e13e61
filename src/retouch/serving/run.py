"""Running one request: the same function in the local worker thread and in every Ray replica."""

from __future__ import annotations

import dataclasses
import io
import time

from PIL import Image

from retouch.control import JobControl
from retouch.models.model import Model
from retouch.outputs import Outputs, is_disk_full
from retouch.params import Img2ImgParams, Job
from retouch.pipeline import JobResources, generate
from retouch.processed import Processed
from retouch.serving.images import ACCEPTED_FORMATS, decode_opened
from retouch.serving.models import ModelManager
from retouch.serving.values import JobOutcome, JobRequest


def run_request(models: ModelManager, request: JobRequest, control: JobControl, queued_s: float = 0.0) -> JobOutcome:
    """The local worker's part of a request: load its checkpoint (with its VAE) and run the job."""
    name = models.checkpoint_for(request.checkpoint, request.keep_checkpoint)
    vae = request.options.sd_vae
    model = models.get(name, vae=vae)
    if not request.other_checkpoints:
        models.release_other()
    return run_job(model, request, control, queued_s, models.resources(model, name, vae))


def run_job(model: Model, request: JobRequest, control: JobControl, queued_s: float = 0.0,
            resources: JobResources | None = None) -> JobOutcome:
    """Run a request's job on ``model`` (``resources``: the other checkpoints and upscalers it may use); A1111's
    response values."""
    started = time.perf_counter()
    job = with_images(request)
    outputs = Outputs(samples_dir=request.outdir, grids_dir=request.outdir, grid=request.grid,
                      filename_stem=request.filename_stem)
    resources = resources or JobResources()
    if request.script is not None:
        return _run_script(model, request, job, control, resources, started, queued_s)
    result = generate(job, model, options=request.options, control=control, outputs=outputs, styles=request.styles,
                      resources=resources)
    info = Processed.from_result(job.params, model, request.options, result).js()
    error = result.save_error
    return JobOutcome(result.images, info, result.job_timestamp, queued_s=queued_s,
                      ran_s=time.perf_counter() - started,
                      save_error=f"could not save images: {error.strerror or error}" if error else None,
                      disk_full=bool(error and is_disk_full(error)))


def _run_script(model: Model, request: JobRequest, job: Job, control: JobControl, resources: JobResources,
                started: float, queued_s: float) -> JobOutcome:
    """An img2img script's job: A1111's answer is the script's images and its ``Processed``."""
    from retouch.scripts import find_script, run_script

    assert request.script is not None
    title, args = request.script
    outcome = run_script(find_script(title), args, job, model, options=request.options, control=control,
                         resources=resources, styles=request.styles)
    processed = dataclasses.replace(
        Processed.from_result(outcome.last_params, model, request.options, outcome.last),
        **{"images": outcome.images, "infotexts": outcome.infotexts, "info": outcome.info, "seed": outcome.seed,
           "subseed": -1, "index_of_first_image": 0, **outcome.overrides})
    return JobOutcome(outcome.images, processed.js(), outcome.last.job_timestamp, queued_s=queued_s,
                      ran_s=time.perf_counter() - started)


def with_images(request: JobRequest) -> Job:
    """The request's job with its images decoded (``ValueError`` naming the field for broken data)."""
    images = request.images
    if not isinstance(request.job.params, Img2ImgParams):
        return request.job

    def decode(data: bytes, field: str) -> Image.Image:
        return decode_opened(Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS), field)

    params = dataclasses.replace(
        request.job.params,
        init_images=[decode(data, f"init_images[{i}]") for i, data in enumerate(images.init_images)],
        image_mask=decode(images.mask, "mask") if images.mask is not None else None,
        latent_mask=decode(images.latent_mask, "latent_mask") if images.latent_mask is not None else None)
    return dataclasses.replace(request.job, params=params)
