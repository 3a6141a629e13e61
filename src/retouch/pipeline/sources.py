"""Where a job's first latents come from: its **image source**. The rest of the pipeline (conditioning, noise,
the denoiser stack, decoding, finishing, infotext) is the same for every source.

* :class:`InitImages` — img2img and inpainting: prepared, encoded init images (with masks and image conditioning),
  noised to the strength's level.

txt2img's source is noise, and hires fix's second pass is init images made from the first pass: each is one
more :class:`ImageSource`, with nothing else to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from retouch.control import JobHooks
from retouch.models.model import Model
from retouch.options import Options
from retouch.params import Img2ImgParams, Job
from retouch.pipeline.latents import InitState, initialize


class ImageSource(Protocol):
    @property
    def denoising_strength(self) -> float | None:
        """How far the sampler walks: a strength in [0, 1] (the schedule's tail), or None for all of it."""
        ...

    def initialize(self, job: Job, model: Model, options: Options, hooks: JobHooks) -> InitState:
        """The first latents, masks and image conditioning of the job (A1111 ``init()``)."""
        ...


@dataclass(frozen=True)
class InitImages:
    """img2img: the job's init images (and mask), encoded."""

    params: Img2ImgParams

    @property
    def denoising_strength(self) -> float | None:
        return self.params.denoising_strength

    def initialize(self, job: Job, model: Model, options: Options, hooks: JobHooks) -> InitState:
        return initialize(job, model, options, hooks)


def image_source(job: Job) -> ImageSource:
    """The image source a job's parameters describe."""
    if isinstance(job.params, Img2ImgParams):
        return InitImages(job.params)
    raise ValueError(f"no image source for {type(job.params).__name__}")
