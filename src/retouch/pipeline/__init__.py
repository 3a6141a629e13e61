"""The txt2img and img2img / inpainting pipeline: :func:`generate` and the stages it runs, each a function of
explicit values (see :mod:`retouch.pipeline.generate` for the order)."""

from retouch.pipeline.finish import FinishedImage, finish_image, generation_info, make_grid
from retouch.pipeline.generate import GenerationResult, Img2ImgResult, JobLog, generate
from retouch.pipeline.inputs import EMPTY_MASK_COMMENT, PreparedInputs, prepare_inputs
from retouch.pipeline.latents import (
    LATENT_FACTOR,
    InitState,
    apply_masked_content,
    batch_pixels,
    decode_latents,
    encode_images,
    initialize,
    make_latent_masks,
    make_rng,
)
from retouch.pipeline.prompts import Batch, batches, expand_prompts
from retouch.pipeline.resources import CheckpointFolder, Checkpoints, JobResources
from retouch.pipeline.sample import (
    BatchConditioning,
    SampledBatch,
    encode_conditioning,
    plan_job_sampling,
    sample_batch,
)
from retouch.pipeline.sources import ImageSource, InitImages, Noise, image_source

__all__ = [
    "EMPTY_MASK_COMMENT", "LATENT_FACTOR", "Batch", "BatchConditioning", "FinishedImage", "ImageSource", "GenerationResult", "Img2ImgResult",
    "CheckpointFolder", "Checkpoints", "JobResources", "Noise", "InitImages", "InitState", "JobLog", "PreparedInputs", "SampledBatch", "apply_masked_content", "batch_pixels", "batches",
    "decode_latents", "encode_conditioning", "encode_images", "expand_prompts", "finish_image",
    "generate", "image_source", "generation_info", "initialize", "make_grid", "make_latent_masks", "make_rng", "plan_job_sampling",
    "prepare_inputs", "sample_batch",
]
