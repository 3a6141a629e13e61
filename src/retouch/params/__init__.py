"""The parameters of a generation job: one object, validated once, at the edge.

:class:`Img2ImgParams` and :class:`Txt2ImgParams` hold A1111's field names and class defaults (spec §2.1–§2.2).
The CLI generates its flags from these fields and the HTTP API fills them from requests; every edge then calls
``validate``, which raises ``ValueError`` naming the field and the bad value, or returns a :class:`Job`: the
parameters with the sampler and schedule resolved to objects and the seeds expanded. Nothing below the edges
validates again.
"""

from retouch.modes import InpaintFill, ResizeMode
from retouch.params.generation import (
    MAX_BATCH,
    MAX_ITERATIONS,
    MAX_STEPS,
    NO_REFINER,
    GenerationParams,
    Job,
    Resolved,
    check_supported,
    expand_seeds,
    fixed_seed,
    image_count,
)
from retouch.params.img2img import Img2ImgJob, Img2ImgParams
from retouch.params.txt2img import LATENT_UPSCALE_MODES, HiresTarget, Txt2ImgJob, Txt2ImgParams

__all__ = ["LATENT_UPSCALE_MODES", "MAX_BATCH", "MAX_ITERATIONS", "MAX_STEPS", "NO_REFINER", "GenerationParams",
           "HiresTarget", "Img2ImgJob", "Img2ImgParams", "InpaintFill", "Job", "Resolved", "ResizeMode",
           "Txt2ImgJob", "Txt2ImgParams", "check_supported", "expand_seeds", "fixed_seed", "image_count"]
