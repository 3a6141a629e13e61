"""A1111's public contract: ``StableDiffusionProcessingImg2Img`` / ``StableDiffusionProcessingTxt2Img`` +
``process_images`` → ``Processed``.

The classes are thin facades (spec §2, the seed): their fields are A1111's and they validate them into the
core :class:`~retouch.params.Job` once per job. ``process_images`` runs
:func:`retouch.pipeline.generate`; ``init()`` and ``sample()`` call the same stage functions. Both leave
A1111's state names on the object (``init_latent``, ``image_conditioning``, ``mask``/``nmask`` — here,
and only here, ``mask`` = 1 where the original is kept — ``overlay_images``, ``mask_for_overlay``, …).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from retouch.a1111 import img2img_params, txt2img_params
from retouch.control import JobControl, JobHooks
from retouch.models.token_merging import token_merging
from retouch.options import Options
from retouch.outputs import Outputs
from retouch.params import Img2ImgJob, Img2ImgParams, Job, Txt2ImgParams
from retouch.pipeline import (
    Batch,
    BatchConditioning,
    CheckpointFolder,
    Checkpoints,
    GenerationResult,
    InitState,
    JobLog,
    JobResources,
    generate,
    initialize,
    plan_job_sampling,
    sample_batch,
)
from retouch.pipeline.inputs import EMPTY_MASK_COMMENT
from retouch.pipeline.latents import LATENT_FACTOR
from retouch.processed import Processed

__all__ = ["JobControl", "Processed", "StableDiffusionProcessingImg2Img", "StableDiffusionProcessingTxt2Img",
           "process_images", "process_images_with_result"]
logger = logging.getLogger(__name__)


@dataclass(repr=False)
class _Processing:
    """What A1111's processing objects carry besides the job's parameters (the fields both facades share)."""

    sd_model: Any = None
    outpath_samples: str | None = None
    outpath_grids: str | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    seed_enable_extras: bool = True
    extra_generation_params: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, Any] = field(default_factory=dict)
    sampler_index: str | None = None
    force_task_id: str | None = None
    options: Options = field(default_factory=Options)
    styles_database: dict[str, tuple[str, str]] | None = None
    control: JobControl = field(default_factory=JobControl)
    filename_stem: str | None = None  # batch-from-folder naming
    alwayson_scripts: dict[str, Any] | None = None  # A1111's API form of built-in scripts: "soft inpainting" only
    script_args: list[Any] | None = None
    checkpoints: Checkpoints | None = None  # where refiner_checkpoint / hr_checkpoint_name are found
    # (default: the folder of sd_model's file)

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    def _job_options(self) -> Options:
        """The job's options (``override_settings`` applied); checks the model and scripts."""
        if self.sd_model is None:
            raise ValueError("sd_model: no model given; pass sd_model=retouch.load_model(...)")
        options = self.options.with_overrides(self.override_settings)
        wanted = options.sd_model_checkpoint
        model = self.sd_model
        if wanted and wanted not in (model.name, model.title, model.path.name):
            logger.warning("override_settings.sd_model_checkpoint=%r is not the model passed in (%s); using %s",
                           wanted, model.title, model.title)
        if self.script_args:
            raise ValueError("script_args: scripts are not supported by retouch (soft inpainting is set through "
                             "alwayson_scripts or soft_inpainting)")
        return options

    def resources(self) -> JobResources:
        checkpoints = self.checkpoints or CheckpointFolder.beside(self.sd_model)
        return JobResources(checkpoints, self.sd_model.upscaler_folders)

    def outputs(self) -> Outputs:
        """Where ``process_images`` saves, from A1111's fields."""
        samples = None if self.do_not_save_samples else self.outpath_samples
        return Outputs(samples_dir=samples, grids_dir=self.outpath_grids, grid=not self.do_not_save_grid,
                       filename_stem=self.filename_stem)



@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(Img2ImgParams, _Processing):
    mask: Any = None
    mask_blur: int | None = None

    def __post_init__(self) -> None:
        if self.mask is not None:
            self.image_mask = self.mask  # the seed: `mask` moves to `image_mask`, `mask` is reused below
        self.mask = None
        if not self.seed_enable_extras:
            self.subseed, self.subseed_strength, self.seed_resize_from_h, self.seed_resize_from_w = -1, 0, 0, 0
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = self.options.initial_noise_multiplier
        if self.extra_generation_params is None:
            self.extra_generation_params = {}
        if self.comments is None:
            self.comments = {}
        # A1111's state names, filled by init() / process_images
        self.nmask: torch.Tensor | None = None
        self.init_latent: torch.Tensor | None = None
        self.image_conditioning: torch.Tensor | None = None
        self.overlay_images: list[Image.Image] | None = None
        self.mask_for_overlay: Image.Image | None = None
        self.paste_to: tuple[int, int, int, int] | None = None
        self.color_corrections: list | None = None
        self.is_using_inpainting_conditioning = False
        self.all_prompts: list[str] | None = None
        self.all_negative_prompts: list[str] | None = None
        self.all_seeds: list[int] | None = None
        self.all_subseeds: list[int] | None = None
        self.job_options = self.options
        self._job: Img2ImgJob | None = None
        self._init_state: InitState | None = None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.sd_model.latent_channels, self.height // LATENT_FACTOR, self.width // LATENT_FACTOR)

    def resolve(self) -> Img2ImgJob:
        """Validate the fields once for this job (the library's edge, through :mod:`retouch.a1111`): the job
        options (base options + ``override_settings``, checked to be supported), the sampler and schedule
        (their canonical names are written back, as A1111 does), the seeds and what the fields left to the
        options mean."""
        self.job_options = self._job_options()
        values = {name: getattr(self, name) for name in (*Img2ImgParams.field_names(), "sampler_index",
                                                          "alwayson_scripts", "override_settings")}
        params = img2img_params(values, base_options=self.options)
        job = params.validate(self.job_options)
        self.sampler_name, self.scheduler = job.sampler.name, job.scheduler.label
        self.soft_inpainting = params.soft_inpainting
        self._job = job
        return job

    # -- A1111 init(): preprocess and encode, once per job ------------------------------------
    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        job = dataclasses.replace(self.resolve(), seeds=list(all_seeds), subseeds=list(all_subseeds))
        self._job = job
        self.all_prompts, self.all_seeds, self.all_subseeds = list(all_prompts), job.seeds, job.subseeds
        hooks = JobHooks(note=self.comment)
        state = initialize(job, self.sd_model, self.job_options, hooks,
                           self.resources().img2img_upscaler(self.job_options, hooks.check))
        self._adopt_init(state)
        for text in state.prepared.comments:
            self.comment(text)
        self.extra_generation_params.update(state.extra_params)

    # -- A1111 sample(): one batch ---------------------------------------------------------------
    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        """Denoise one batch from the state ``init()`` left; returns its final latents (after the blend)."""
        if self._job is None or self._init_state is None:
            raise RuntimeError("sample() needs init() first (process_images calls both)")
        job = self._job
        with torch.inference_mode(), token_merging(job.resolved.token_merging_ratio):
            plan = plan_job_sampling(job, self.sd_model, self.job_options, job.params.denoising_strength)
            batch = Batch(0, list(prompts), [""] * len(prompts), list(seeds), list(subseeds))
            sampled = sample_batch(self.sd_model, job, self.job_options, plan, self._init_state,
                                   BatchConditioning(conditioning, unconditional_conditioning), batch, self.control)
        self.extra_generation_params.update(sampled.extra_params)
        return sampled.latents

    def _adopt_init(self, state: InitState) -> None:
        """A1111's state names, from the core's init state."""
        model = self.sd_model
        self._init_state = state
        prepared = state.prepared
        self.init_latent, self.image_conditioning = state.init_latent, state.image_conditioning
        if state.blend is not None:
            self.mask, self.nmask = state.blend.keep, state.blend.repaint
        self.mask_for_overlay, self.paste_to = prepared.mask_for_overlay, prepared.paste_to
        self.overlay_images, self.color_corrections = state.overlay_images, state.color_corrections
        self.batch_size = state.batch_size
        self.image_cfg_scale = self.image_cfg_scale if model.is_pix2pix else None
        self.is_using_inpainting_conditioning = model.is_inpainting
        if EMPTY_MASK_COMMENT in prepared.comments:
            self.inpaint_full_res = False

    def _adopt_result(self, result: GenerationResult) -> None:
        _adopt_seeds(self, result, self._job)
        if result.init is not None:
            self._adopt_init(result.init)


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(Txt2ImgParams, _Processing):
    """A1111's txt2img processing object (with the hires fix); run it with :func:`process_images`."""

    def __post_init__(self) -> None:
        if self.extra_generation_params is None:
            self.extra_generation_params = {}
        if self.comments is None:
            self.comments = {}
        if not self.seed_enable_extras:
            self.subseed, self.subseed_strength, self.seed_resize_from_h, self.seed_resize_from_w = -1, 0, 0, 0
        self.all_prompts: list[str] | None = None
        self.all_negative_prompts: list[str] | None = None
        self.all_seeds: list[int] | None = None
        self.all_subseeds: list[int] | None = None
        self.is_using_inpainting_conditioning = False
        self.job_options = self.options
        self._job: Job | None = None

    def resolve(self) -> Job:
        """Validate the fields once for this job (through :mod:`retouch.a1111`); the sampler's and schedule's
        canonical names are written back, and ``firstphase_width/height`` applied, as A1111 does."""
        self.job_options = self._job_options()
        values = {name: getattr(self, name) for name in (*Txt2ImgParams.field_names(), "sampler_index",
                                                          "alwayson_scripts")}
        job = txt2img_params(values).validate(self.job_options)
        self.sampler_name, self.scheduler = job.sampler.name, job.scheduler.label
        self.width, self.height = job.params.width, job.params.height
        self.firstphase_width = self.firstphase_height = 0
        self._job = job
        return job

    def _adopt_result(self, result: GenerationResult) -> None:
        _adopt_seeds(self, result, self._job)
        self.is_using_inpainting_conditioning = self.sd_model.is_inpainting


Processing = StableDiffusionProcessingImg2Img | StableDiffusionProcessingTxt2Img


def _adopt_seeds(p: Processing, result: GenerationResult, job: Job | None) -> None:
    """A1111's ``all_prompts`` … ``all_subseeds`` and the tiling the job ran with, on the processing object."""
    p.all_prompts, p.all_negative_prompts = result.prompts, result.negative_prompts
    p.all_seeds, p.all_subseeds = result.seeds, result.subseeds
    if job is not None:
        p.tiling = job.resolved.tiling


def process_images(p: Processing) -> Processed:
    """Run the job described by ``p`` (A1111 ``process_images``). Options come from ``p.options`` with
    ``p.override_settings`` applied to a copy (nothing global changes, so nothing needs restoring)."""
    return process_images_with_result(p)[0]


def process_images_with_result(p: Processing) -> tuple[Processed, GenerationResult]:
    """:func:`process_images`, also returning the core's :class:`~retouch.pipeline.GenerationResult`
    (final latents of each batch, the init state)."""
    job = p.resolve()
    result = generate(job, p.sd_model, options=p.job_options, control=p.control, outputs=p.outputs(),
                      styles=p.styles_database, log=JobLog(p.extra_generation_params, p.comments),
                      resources=p.resources())
    p._adopt_result(result)
    return Processed.from_result(p, p.sd_model, p.job_options, result), result


def _mask_blur_get(self) -> int | None:
    return self.mask_blur_x if self.mask_blur_x == self.mask_blur_y else None


def _mask_blur_set(self, value) -> None:
    if isinstance(value, int):
        self.mask_blur_x = value
        self.mask_blur_y = value


# The seed: `mask_blur` is a property over mask_blur_x/y; setting an int sets both (and, being applied
# after them in the constructor, wins); other values are ignored.
StableDiffusionProcessingImg2Img.mask_blur = property(_mask_blur_get, _mask_blur_set)  # type: ignore[assignment]
