"""``generate()``: one txt2img or img2img / inpainting job, start to finish, as A1111's ``process_images``.

    0  prompts, the sampling plan, the refiner and the hires fix (no network work: a bad combination fails first)
    1  the image source: prepare the inputs (resize, crop, masks, overlays, fill)   pipeline.sources / inputs
    2  encode, latent masks, image conditioning (txt2img: none)                    pipeline.latents
    per batch:
    3  conditioning                  (prompt schedules, AND, emphasis)          pipeline.sample
    4  noise → sample → decode       (denoiser stack, inpaint blend, refiner)   pipeline.sample / refiner / latents
       hires fix: upscale, and an img2img pass at the target size               pipeline.hires
    5  composite, infotext, save     (colour correction, overlay, grid)         pipeline.finish
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from retouch.imageops.resize import Enlarge
from retouch.infotext import GenerationInfo, format_infotext, generation_params
from retouch.models.memory import keep_freed_blocks, return_freed_memory
from retouch.models.model import Model
from retouch.models.padding import stop_when
from retouch.models.token_merging import token_merging
from retouch.networks import networks_of
from retouch.networks.activation import Activation
from retouch.options import Options
from retouch.outputs import Outputs, save_image
from retouch.params import GenerationParams, Job, Txt2ImgParams
from retouch.pipeline.finish import (
    FinishedImage,
    Overlays,
    finish_image,
    generation_info,
    make_grid,
    soft_overlays,
)
from retouch.pipeline.hires import HiresFix, PerImage, plan_hires, upscale_first_pass
from retouch.pipeline.latents import InitState, decode_latents
from retouch.pipeline.networks import JobNetworks, default_network_prompts
from retouch.pipeline.prompts import Batch, batches, expand_prompts
from retouch.pipeline.refiner import Refiner, RefinerSwitch, check_refiner, refiner_plan
from retouch.pipeline.resources import CheckpointFolder, JobResources
from retouch.pipeline.sample import (
    BatchConditioning,
    EmbeddingUse,
    HiresPrompts,
    SampledBatch,
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
class GenerationResult:
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


Img2ImgResult = GenerationResult  # its name before txt2img


@dataclass
class _Job:
    """One running job: its inputs and what it has made so far."""

    job: Job
    model: Model
    options: Options
    control: JobControl
    outputs: Outputs
    log: JobLog
    prompts: list[str]
    negatives: list[str]
    networks: JobNetworks
    resources: JobResources
    refiner: Refiner | None = None
    hires: HiresFix | None = None
    passes: int = 1  # sampling passes per batch (2 with the hires fix: A1111 doubles job_count)
    enlarge: Enlarge | None = None  # the upscaler_for_img2img option's upscaler
    info: GenerationInfo | None = None
    batch_size: int = 1
    conds: dict[bool, tuple[tuple, BatchConditioning]] = field(default_factory=dict)  # per pass (hires: True), the
    # last batch's, reused while its prompts repeat
    save_error: OSError | None = None
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    latents: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hooks = JobHooks(note=self.log.comment, check=self.check)
        self._networks: dict[int, JobNetworks] = {id(self.model): self.networks}

    def networks_on(self, model: Model) -> JobNetworks:
        """The job's networks on ``model`` (the refiner and the hires checkpoint get the same LoRAs)."""
        if id(model) not in self._networks:
            networks = JobNetworks(networks_of(model), self.options, self.networks.disabled)
            networks.prepare(self.prompts[::self.batch_size][:self.job.params.n_iter])
            self._networks[id(model)] = networks
        return self._networks[id(model)]

    def check(self) -> None:
        """Stop at the next network call once the job is interrupted (skip only ends sampling)."""
        if self.control.interrupted:
            raise Interrupted

    def infotext(self, prompt: str, negative: str, seed: int, subseed: int, index: int = 0) -> str:
        """Image ``index``'s infotext (per-image values, as the hires prompt, are looked up by it)."""
        assert self.info is not None
        extra = {k: v(index, prompt, negative) if isinstance(v, PerImage) else v for k, v in self.log.extra.items()}
        params = generation_params(self.info, seed=seed, subseed=subseed, extra=extra, options=self.options)
        return format_infotext(prompt, negative, params)


def generate(params: GenerationParams | Job, model: Model, *, options: Options | None = None,
             control: JobControl | None = None, outputs: Outputs | None = None,
             styles: Mapping[str, tuple[str, str]] | None = None, log: JobLog | None = None,
             resources: JobResources | None = None) -> GenerationResult:
    """Run one txt2img (:class:`~retouch.params.Txt2ImgParams`) or img2img / inpainting
    (:class:`~retouch.params.Img2ImgParams`) job.

    Args:
        params: the job's parameters (validated here) or an already validated :class:`~retouch.params.Job`.
        model: from :func:`retouch.load_model`.
        options: A1111's settings for this job (``override_settings`` already applied); default
            :class:`Options`.
        control: progress and cancellation (the job polls ``interrupted``/``skipped``).
        outputs: where to save images (default: nowhere) and whether to make a grid.
        styles: saved styles by name (``styles.csv``: name → (prompt, negative prompt)).
        log: where infotext keys and comments go (default: a fresh one; the facade passes its own).
        resources: the other checkpoints (refiner, hires checkpoint) and the upscalers the job may use
            (default: the checkpoints beside ``model``'s file, no model upscalers).

    Raises:
        ValueError: a bad parameter or an option retouch does not support, before any work.
    """
    options = options or Options()
    job = params if isinstance(params, Job) else params.validate(options)
    log = log if log is not None else JobLog()
    control = control or JobControl()
    resources = resources or JobResources(CheckpointFolder.beside(model), model.upscaler_folders)
    timestamp = time.strftime("%Y%m%d%H%M%S")
    run = _prepare(job, model, options, control, outputs or Outputs(), log, styles, resources)
    source = image_source(job)
    plan = plan_job_sampling(job, model, options, source.denoising_strength)
    tiling = job.resolved.tiling
    if isinstance(job.params, Txt2ImgParams) and job.params.enable_hr:
        run.hires, hires_extra = plan_hires(job, model, options, resources, plan, styles, run.hooks)
        run.passes = 2
        if run.refiner is not None and options.hires_fix_refiner_pass != "first pass":
            check_refiner(run.refiner.model, run.hires.model)  # it may take over from the hires checkpoint
    if control.job_count == -1:
        control.job_count = job.params.n_iter * run.passes
    control.latent_format = model.latent_format
    last = Batch(0, run.prompts[:1], run.negatives[:1], job.seeds[:1], job.subseeds[:1])
    uses_soft_inpainting = getattr(job.params, "uses_soft_inpainting", False)
    if uses_soft_inpainting:
        log.extra.update(job.params.soft_inpainting.infotext_params())  # a script's process(): before init()
    with model.tiling(tiling), _tiling_of(run, tiling), return_freed_memory(), \
            stop_when(lambda: control.interrupted), token_merging(job.resolved.token_merging_ratio):
        init = _initialize(run, source)
        if run.hires is not None:
            log.extra.update(hires_extra)
        run.info = generation_info(job, model, options, init, tiling)
        for batch in batches(job, run.prompts, run.negatives, run.batch_size):
            if init is None:
                break
            last = batch
            if not _run_batch(run, plan, init, batch):
                break
    return _result(run, init, last, timestamp)


def _prepare(job: Job, model: Model, options: Options, control: JobControl, outputs: Outputs, log: JobLog,
             styles: Mapping[str, tuple[str, str]] | None, resources: JobResources) -> _Job:
    """The job's prompts, networks and refiner (A1111 ``setup_prompts``, the networks' parse)."""
    comments: list[str] = []
    prompts, negatives = expand_prompts(job, styles, comments)
    for text in comments:
        log.comment(text)
    extra = networks_of(model)
    networks = JobNetworks(extra, options, job.params.disable_extra_networks)
    images = getattr(job.params, "init_images", None) or ()
    batch_size = len(images) if len(images) > 1 else job.params.batch_size
    prompts = default_network_prompts(prompts, extra, options, prompts[:batch_size], networks.disabled)
    networks.prepare(prompts[::batch_size][:job.params.n_iter])
    run = _Job(job, model, options, control, outputs, log, prompts, negatives, networks, resources)
    run.batch_size = batch_size
    run.enlarge = resources.img2img_upscaler(options, run.check)
    if job.params.refiner is not None:
        refiner = resources.checkpoint(job.params.refiner, "refiner_checkpoint")
        check_refiner(refiner, model)
        run.refiner = Refiner(refiner, job.params.refiner_switch_at)
        run.networks_on(refiner)  # its networks read now: a file that cannot be applied fails before any work
    return run


@contextlib.contextmanager
def _tiling_of(run: _Job, tiling: bool):
    """Seamless tiling on the job's other models too (the refiner, the hires checkpoint)."""
    with contextlib.ExitStack() as stack:
        for other in {id(m): m for m in (run.refiner.model if run.refiner else None,
                                          run.hires.model if run.hires else None) if m is not None}.values():
            if other is not run.model:
                stack.enter_context(other.tiling(tiling))
        yield


def _initialize(run: _Job, source: ImageSource) -> InitState | None:
    """A1111's ``init()``; None when the job is interrupted meanwhile."""
    try:
        state = source.initialize(run.job, run.model, run.options, run.hooks, run.enlarge)
    except Interrupted:
        return None
    run.batch_size = state.batch_size
    for text in state.prepared.comments:
        run.log.comment(text)
    run.log.extra.update(state.extra_params)
    return state


def _run_batch(run: _Job, plan: SamplingPlan, init: InitState, batch: Batch) -> bool:
    """Conditioning, sampling (and the hires pass), decoding and finishing of one batch; False when the job should
    stop.

    An interrupt stops the job at the next network call, keeping what is finished. When it lands during
    sampling, the batch's first image is still decoded from the sampler's last prediction (A1111 shows
    the partial result; it decodes the whole batch, which would not be "at the next call").
    """
    control = run.control
    control.job_no, control.skipped = batch.n * run.passes, False
    if control.interrupted:
        return False
    sampled = _sample(run, run.model, run.networks, plan, init, batch, batch.prompts, batch.negative_prompts)
    if sampled is not None and run.hires is not None and not sampled.interrupted:
        control.job_no += 1
        sampled = _hires_pass(run, batch, sampled)
    if sampled is None:
        return False
    run.latents.append(sampled.latents)
    stopped = sampled.interrupted and control.interrupted
    overlays = soft_overlays(run.job, init, sampled.latents, run.options)
    try:
        if stopped:  # the one partial image, as A1111; a second interrupt stops its decode too
            seen = control.interrupts
            with stop_when(lambda: control.interrupts > seen):
                image = decode_latents(sampled.model, sampled.latents[:1], JobHooks(note=run.log.comment))[0]
            _add_image(run, init, batch, 0, image, overlays)
            control.job_no = (batch.n + 1) * run.passes
            return False
        for i in range(len(sampled.latents)):
            image = decode_latents(sampled.model, sampled.latents[i:i + 1], run.hooks)[0]
            _add_image(run, init, batch, i, image, overlays)
    except Interrupted:
        return False
    control.job_no = (batch.n + 1) * run.passes
    return True


def _sample(run: _Job, model: Model, networks: JobNetworks, plan: SamplingPlan, init: InitState, batch: Batch,
            prompts: list[str], negatives: list[str], hires: HiresPrompts | None = None) -> SampledBatch | None:
    """One sampling pass of a batch on ``model`` with ``prompts``' networks applied (None: interrupted while
    encoding the prompts)."""
    texts, activation = networks.batch(prompts)
    for text in activation.comments():
        run.log.comment(text)
    if activation.hashes and run.options.lora_add_hashes_to_infotext:
        run.log.extra["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in activation.hashes.items())
    with networks.extra.patcher.applied(activation.networks), contextlib.ExitStack() as refiner_networks:
        try:
            conds = _conditioning(run, model, networks, texts, negatives, activation, hires)
        except Interrupted:
            return None
        switch = None
        if run.refiner is not None:
            def encode(refiner: Model) -> BatchConditioning:
                on_refiner = run.networks_on(refiner)
                refiner_texts, refiner_activation = on_refiner.batch(prompts)
                refiner_networks.enter_context(on_refiner.extra.patcher.applied(refiner_activation.networks))
                embeddings = EmbeddingUse(on_refiner.find_embedding(refiner_activation), on_refiner.note_embeddings)
                return encode_conditioning(refiner, run.job, run.options, refiner_texts, negatives, run.check,
                                           embeddings, hires)

            switch = RefinerSwitch(run.refiner, model, run.options, plan, encode, functools.partial(refiner_plan, plan),
                                   None if run.hires is None else hires is not None)
        with keep_freed_blocks():
            sampled = sample_batch(model, run.job, run.options, plan, init, conds, batch, run.control, switch)
    run.log.extra.update(sampled.extra_params)
    return sampled


def _hires_pass(run: _Job, batch: Batch, first: SampledBatch) -> SampledBatch | None:
    """The batch's hires pass (A1111 ``sample_hr_pass``); the first pass, as interrupted, when the job is
    interrupted before the second starts, and its upscaled latents when interrupted before the sampler starts."""
    fix = run.hires
    assert fix is not None
    if run.control.interrupted:
        return dataclasses.replace(first, interrupted=True)
    save = run.outputs.samples_dir is not None and run.options.samples_save \
        and run.options.save_images_before_highres_fix
    keep = (lambda pictures: _save_before_hires(run, batch, pictures)) if save else None
    try:
        init = upscale_first_pass(fix, first.latents, first.model, run.options, run.hooks, keep)
    except Interrupted:
        return dataclasses.replace(first, interrupted=True)
    start = batch.n * run.batch_size
    prompts = fix.prompts[start:start + len(batch)]
    negatives = fix.negatives[start:start + len(batch)]
    with token_merging(run.job.resolved.token_merging_ratio_hr):  # A1111 get_token_merging_ratio(for_hr=True)
        sampled = _sample(run, fix.model, run.networks_on(fix.model), fix.plan, init, batch, prompts, negatives,
                          fix.conditioning)
    # interrupted while encoding the hires prompts: the upscaled first pass (A1111's sampler returns its input)
    return sampled if sampled is not None else SampledBatch(init.init_latent, True, {}, fix.model)


def _save_before_hires(run: _Job, batch: Batch, pictures: list[Image.Image]) -> None:
    """A1111's ``save_images_before_highres_fix``: the first pass's pictures, "-before-highres-fix"."""
    options, outputs = run.options, run.outputs
    folder = outputs.samples_dir
    assert folder is not None
    for i, picture in enumerate(pictures):
        index = batch.n * run.batch_size + i
        text = run.infotext(batch.prompts[i], batch.negative_prompts[i], batch.seeds[i], batch.subseeds[i], index)
        decoration = outputs.decoration(batch.seeds[i], index + 1, run.job.params.n_iter > 1 or run.batch_size > 1)
        _save(run, functools.partial(
            save_image, picture, folder, decoration=decoration, infotext=text if options.enable_pnginfo else None,
            extension=options.samples_format, suffix="-before-highres-fix", jpeg_quality=options.jpeg_quality,
            webp_lossless=options.webp_lossless))


def _conditioning(run: _Job, model: Model, networks: JobNetworks, texts: list[str], negatives: list[str],
                  activation: Activation, hires: HiresPrompts | None) -> BatchConditioning:
    """The batch's encoded prompts; the previous batch's when the prompts and networks are the same (A1111's
    cond cache, one per pass). ``TI hashes`` lists the embeddings each encoding used (kept when the cache is
    used: A1111 drops them then, a bug not copied)."""
    key = (id(model), hires, tuple(texts), tuple(negatives), activation.key)
    slot = hires is not None
    cached = run.conds.get(slot)
    if cached is None or cached[0] != key:
        embeddings = EmbeddingUse(networks.find_embedding(activation), networks.note_embeddings)
        conds = encode_conditioning(model, run.job, run.options, texts, negatives, run.check, embeddings, hires)
        run.conds[slot] = cached = (key, conds)
        if networks.ti_hashes and run.options.textual_inversion_add_hashes_to_infotext:
            run.log.extra["TI hashes"] = networks.ti_hashes
    return cached[1]


def _add_image(run: _Job, init: InitState, batch: Batch, i: int, decoded: Image.Image,
               overlays: Overlays | None) -> None:
    """Finish image ``i`` of a batch; save it (and its variants) when asked; add it to the results."""
    options, outputs = run.options, run.outputs
    save = outputs.samples_dir is not None and options.samples_save
    finished = finish_image(decoded, i, init, options, overlays=overlays,
                            keep_before_color_correction=save and options.save_images_before_color_correction)
    text = run.infotext(batch.prompts[i], batch.negative_prompts[i], batch.seeds[i], batch.subseeds[i],
                        batch.n * run.batch_size + i)
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


def _result(run: _Job, init: InitState | None, last: Batch, timestamp: str) -> GenerationResult:
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
    return GenerationResult(
        images=run.images, infotexts=run.infotexts, seeds=job.seeds, subseeds=job.subseeds, prompts=run.prompts,
        negative_prompts=run.negatives, extra_generation_params=run.log.extra, comments=list(run.log.comments),
        sampler_name=job.sampler.name, scheduler=job.scheduler.label, batch_size=run.batch_size,
        index_of_first_image=first, job_timestamp=timestamp, interrupted=run.control.interrupted,
        save_error=run.save_error, files=outputs.files, init=init, latents=run.latents)

