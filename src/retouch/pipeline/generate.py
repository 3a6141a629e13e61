"""``generate()``: one img2img / inpainting job, start to finish, as A1111's ``process_images``.

    0  prompts and the sampling plan (arithmetic only: a bad combination fails before any work)
    1  prepare the inputs            (resize, crop, masks, overlays, fill)       pipeline.inputs
    2  encode, latent masks, image conditioning                                 pipeline.latents
    per batch:
    3  conditioning                  (prompt schedules, AND, emphasis)          pipeline.sample
    4  noise → sample → decode       (denoiser stack, inpaint blend)            pipeline.sample / latents
    5  composite, infotext, save     (colour correction, overlay, grid)         pipeline.finish
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from retouch.control import Interrupted, JobControl, JobHooks
from retouch.infotext import GenerationInfo, format_infotext, generation_params
from retouch.models.memory import reuse_freed_memory
from retouch.models.model import Model
from retouch.models.padding import stop_when
from retouch.networks import networks_of
from retouch.networks.activation import Activation
from retouch.options import Options
from retouch.outputs import Outputs, save_image
from retouch.params import Img2ImgJob, Img2ImgParams, Job
from retouch.pipeline.finish import (
    FinishedImage,
    Overlays,
    finish_image,
    generation_info,
    make_grid,
    soft_overlays,
)
from retouch.pipeline.latents import InitState, decode_latents
from retouch.pipeline.networks import JobNetworks, default_network_prompts
from retouch.pipeline.prompts import Batch, batches, expand_prompts
from retouch.pipeline.sample import (
    BatchConditioning,
    EmbeddingUse,
    encode_conditioning,
    plan_job_sampling,
    sample_batch,
)
from retouch.pipeline.sources import ImageSource, image_source
from retouch.sampling.plan import SamplingPlan

logger = logging.getLogger(__name__)


@dataclass
class JobLog:
    """What a job reports besides its images: infotext keys (``extra_generation_params``, in the order
    they were added) and comments (unique, in order)."""

    extra: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, Any] = field(default_factory=dict)

    def comment(self, text: str) -> None:
        self.comments[text] = 1


@dataclass
class Img2ImgResult:
    """The result of :func:`generate` (A1111's ``Processed``, as a plain value).

    ``images`` holds what A1111 returns: the grid first when there is one (``index_of_first_image`` 1),
    then each image followed by its optional mask outputs; ``infotexts`` one per returned image that
    has one. ``init`` is the state ``init()`` left (init latents, masks, overlays); ``latents`` the final
    latents of each batch, after the inpaint blend.
    """

    images: list[Image.Image]
    infotexts: list[str]
    seeds: list[int]
    subseeds: list[int]
    prompts: list[str]
    negative_prompts: list[str]
    extra_generation_params: dict[str, Any]
    comments: list[str]
    sampler_name: str
    scheduler: str
    batch_size: int
    index_of_first_image: int = 0
    job_timestamp: str = ""
    interrupted: bool = False
    save_error: OSError | None = None  # the first failed save (later ones were not tried); images are kept
    files: list[Path] = field(default_factory=list)
    init: InitState | None = None
    latents: list[torch.Tensor] = field(default_factory=list)


@dataclass
class _Job:
    """One running job: its inputs and what it has made so far."""

    job: Img2ImgJob
    model: Model
    options: Options
    control: JobControl
    outputs: Outputs
    log: JobLog
    prompts: list[str]
    negatives: list[str]
    networks: JobNetworks
    info: GenerationInfo | None = None
    batch_size: int = 1
    conds: tuple[tuple, BatchConditioning] | None = None  # the last batch's, reused while its prompts repeat
    save_error: OSError | None = None
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    latents: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hooks = JobHooks(note=self.log.comment, check=self.check)

    def check(self) -> None:
        """Stop at the next network call once the job is interrupted (skip only ends sampling)."""
        if self.control.interrupted:
            raise Interrupted

    def infotext(self, prompt: str, negative: str, seed: int, subseed: int) -> str:
        assert self.info is not None
        params = generation_params(self.info, seed=seed, subseed=subseed, extra=self.log.extra, options=self.options)
        return format_infotext(prompt, negative, params)


def generate(params: Img2ImgParams | Img2ImgJob, model: Model, *, options: Options | None = None,
             control: JobControl | None = None, outputs: Outputs | None = None,
             styles: Mapping[str, tuple[str, str]] | None = None, log: JobLog | None = None) -> Img2ImgResult:
    """Run one img2img / inpainting job.

    Args:
        params: the job's parameters (validated here) or an already validated :class:`Img2ImgJob`.
        model: from :func:`retouch.load_model`.
        options: A1111's settings for this job (``override_settings`` already applied); default
            :class:`Options`.
        control: progress and cancellation (the job polls ``interrupted``/``skipped``).
        outputs: where to save images (default: nowhere) and whether to make a grid.
        styles: saved styles by name (``styles.csv``: name → (prompt, negative prompt)).
        log: where infotext keys and comments go (default: a fresh one; the facade passes its own).

    Raises:
        ValueError: a bad parameter or an option retouch does not support, before any work.
    """
    options = options or Options()
    job = params if isinstance(params, Job) else params.validate(options)
    log = log if log is not None else JobLog()
    control = control or JobControl()
    timestamp = time.strftime("%Y%m%d%H%M%S")
    comments: list[str] = []
    prompts, negatives = expand_prompts(job, styles, comments)
    for text in comments:
        log.comment(text)
    extra = networks_of(model)
    networks = JobNetworks(extra, options, job.params.disable_extra_networks)
    batch_size = len(job.params.init_images) if len(job.params.init_images or ()) > 1 else job.params.batch_size
    prompts = default_network_prompts(prompts, extra, options, prompts[:batch_size], networks.disabled)
    networks.prepare(prompts[::batch_size][:job.params.n_iter])
    run = _Job(job, model, options, control, outputs or Outputs(), log, prompts, negatives, networks)
    source = image_source(job)
    plan = plan_job_sampling(job, model, options, source.denoising_strength)
    tiling = job.resolved.tiling
    if control.job_count == -1:
        control.job_count = job.params.n_iter
    control.latent_format = model.latent_format
    last = Batch(0, prompts[:1], negatives[:1], job.seeds[:1], job.subseeds[:1])
    if job.params.uses_soft_inpainting:
        assert job.params.soft_inpainting is not None
        log.extra.update(job.params.soft_inpainting.infotext_params())  # a script's process(): before init()
    with model.tiling(tiling), reuse_freed_memory(), stop_when(lambda: control.interrupted):
        init = _initialize(run, source)
        run.info = generation_info(job, model, options, init, tiling)
        for batch in batches(job, prompts, negatives, run.batch_size):
            if init is None:
                break
            last = batch
            if not _run_batch(run, plan, init, batch):
                break
    return _result(run, init, last, timestamp)


def _initialize(run: _Job, source: ImageSource) -> InitState | None:
    """A1111's ``init()``; None when the job is interrupted meanwhile."""
    try:
        state = source.initialize(run.job, run.model, run.options, run.hooks)
    except Interrupted:
        return None
    run.batch_size = state.batch_size
    for text in state.prepared.comments:
        run.log.comment(text)
    run.log.extra.update(state.extra_params)
    return state


def _run_batch(run: _Job, plan: SamplingPlan, init: InitState, batch: Batch) -> bool:
    """Conditioning, sampling, decoding and finishing of one batch; False when the job should stop.

    An interrupt stops the job at the next network call, keeping what is finished. When it lands during
    sampling, the batch's first image is still decoded from the sampler's last prediction (A1111 shows
    the partial result; it decodes the whole batch, which would not be "at the next call").
    """
    control = run.control
    control.job_no, control.skipped = batch.n, False
    if control.interrupted:
        return False
    texts, activation = run.networks.batch(batch.prompts)
    for text in activation.comments():
        run.log.comment(text)
    if activation.hashes and run.options.lora_add_hashes_to_infotext:
        run.log.extra["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in activation.hashes.items())
    with run.networks.extra.patcher.applied(activation.networks):
        try:
            conds = _conditioning(run, texts, batch.negative_prompts, activation)
        except Interrupted:
            return False
        sampled = sample_batch(run.model, run.job, run.options, plan, init, conds, batch, control)
    run.log.extra.update(sampled.extra_params)
    run.latents.append(sampled.latents)
    stopped = sampled.interrupted and control.interrupted
    overlays = soft_overlays(run.job, init, sampled.latents, run.options)
    try:
        if stopped:  # the one partial image, as A1111; a second interrupt stops its decode too
            seen = control.interrupts
            with stop_when(lambda: control.interrupts > seen):
                image = decode_latents(run.model, sampled.latents[:1], JobHooks(note=run.log.comment))[0]
            _add_image(run, init, batch, 0, image, overlays)
            control.job_no = batch.n + 1
            return False
        for i in range(len(sampled.latents)):
            image = decode_latents(run.model, sampled.latents[i:i + 1], run.hooks)[0]
            _add_image(run, init, batch, i, image, overlays)
    except Interrupted:
        return False
    control.job_no = batch.n + 1
    return True


def _conditioning(run: _Job, texts: list[str], negatives: list[str], activation: Activation) -> BatchConditioning:
    """The batch's encoded prompts; the previous batch's when the prompts and networks are the same (A1111's
    cond cache). ``TI hashes`` lists the embeddings each encoding used (kept when the cache is used: A1111
    drops them then, a bug not copied)."""
    key = (tuple(texts), tuple(negatives), activation.key)
    if run.conds is None or run.conds[0] != key:
        embeddings = EmbeddingUse(run.networks.find_embedding(activation), run.networks.note_embeddings)
        run.conds = (key, encode_conditioning(run.model, run.job, run.options, texts, negatives, run.check,
                                              embeddings))
        if run.networks.ti_hashes and run.options.textual_inversion_add_hashes_to_infotext:
            run.log.extra["TI hashes"] = run.networks.ti_hashes
    return run.conds[1]


def _add_image(run: _Job, init: InitState, batch: Batch, i: int, decoded: Image.Image,
               overlays: Overlays | None) -> None:
    """Finish image ``i`` of a batch; save it (and its variants) when asked; add it to the results."""
    options, outputs = run.options, run.outputs
    save = outputs.samples_dir is not None and options.samples_save
    finished = finish_image(decoded, i, init, options, overlays=overlays,
                            keep_before_color_correction=save and options.save_images_before_color_correction)
    text = run.infotext(batch.prompts[i], batch.negative_prompts[i], batch.seeds[i], batch.subseeds[i])
    if save:
        _save_sample(run, finished, text, batch, i)
    run.infotexts.append(text)
    image = finished.image
    if options.enable_pnginfo:
        image.info["parameters"] = text
    run.images.append(image)
    if options.return_mask and finished.mask_image is not None:
        run.images.append(finished.mask_image)
    if options.return_mask_composite and finished.mask_composite is not None:
        run.images.append(finished.mask_composite)


def _save_sample(run: _Job, finished: FinishedImage, text: str, batch: Batch, i: int) -> None:
    options, outputs = run.options, run.outputs
    params = run.job.params
    number = batch.n * run.batch_size + i + 1
    decoration = outputs.decoration(batch.seeds[i], number, params.n_iter > 1 or run.batch_size > 1)
    stored = text if options.enable_pnginfo else None
    variants = [(finished.before_color_correction, "-before-color-correction"), (finished.image, "")]
    if options.save_mask:
        variants.append((finished.mask_image, "-mask"))
    if options.save_mask_composite:
        variants.append((finished.mask_composite, "-mask-composite"))
    folder = outputs.samples_dir
    assert folder is not None
    for image, suffix in variants:
        if image is not None:  # no interrupt check: an interrupted job's partial image is saved too (as A1111)
            _save(run, functools.partial(
                save_image, image, folder, decoration=decoration, infotext=stored, extension=options.samples_format,
                suffix=suffix, jpeg_quality=options.jpeg_quality, webp_lossless=options.webp_lossless))


def _save(run: _Job, write: Callable[[], Path], first: bool = False) -> None:
    """Write one file; after a failure, say so once and write nothing more (the images are still returned)."""
    if run.save_error is not None:
        return
    try:
        path = write()
    except OSError as e:
        run.save_error = e
        run.log.comment(f"Could not save images: {e.strerror or e}; nothing more was saved.")
        logger.error("could not save images: %s", e)
        return
    run.outputs.files.insert(0, path) if first else run.outputs.files.append(path)


def _result(run: _Job, init: InitState | None, last: Batch, timestamp: str) -> Img2ImgResult:
    job, options, outputs = run.job, run.options, run.outputs
    if not run.infotexts:
        run.infotexts.append(run.infotext(last.prompts[0], last.negative_prompts[0], last.seeds[0], last.subseeds[0]))
    first = 0
    grid = make_grid(run.images, run.batch_size, options, outputs.grid)
    if grid is not None:
        text = run.infotext(run.prompts[0], run.negatives[0], job.seeds[0], job.subseeds[0])
        if options.return_grid:
            run.infotexts.insert(0, text)
            if options.enable_pnginfo:
                grid.info["parameters"] = text
            run.images.insert(0, grid)
            first = 1
        if options.grid_save and outputs.grids_dir is not None:
            folder = outputs.grids_dir
            _save(run, lambda: save_image(
                grid, folder, decoration="", infotext=text if options.enable_pnginfo else None, basename="grid",
                extension=options.grid_format, jpeg_quality=options.jpeg_quality,
                webp_lossless=options.webp_lossless), first=True)
    return Img2ImgResult(
        images=run.images, infotexts=run.infotexts, seeds=job.seeds, subseeds=job.subseeds, prompts=run.prompts,
        negative_prompts=run.negatives, extra_generation_params=run.log.extra, comments=list(run.log.comments),
        sampler_name=job.sampler.name, scheduler=job.scheduler.label, batch_size=run.batch_size,
        index_of_first_image=first, job_timestamp=timestamp, interrupted=run.control.interrupted,
        save_error=run.save_error, files=outputs.files, init=init, latents=run.latents)

