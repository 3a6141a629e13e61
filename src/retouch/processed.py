"""``Processed``: the result of a job, with A1111's fields and its ``js()`` info JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from PIL import Image

from retouch.infotext import VERSION_TEXT

if TYPE_CHECKING:
    from retouch.pipeline import Img2ImgResult
    from retouch.processing import StableDiffusionProcessingImg2Img


class Processed:
    """The result of :func:`process_images`, with A1111's fields and ``js()`` info JSON."""

    def __init__(self, p: StableDiffusionProcessingImg2Img, images: list[Image.Image], *, seed: int, subseed: int,
                 infotexts: list[str], index_of_first_image: int = 0, job_timestamp: str = ""):
        model = p.sd_model
        self.images = images
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.comments = "".join(f"{c}\n" for c in p.comments)
        self.all_prompts, self.all_negative_prompts = p.all_prompts, p.all_negative_prompts
        self.all_seeds, self.all_subseeds = p.all_seeds, p.all_subseeds
        self.prompt = p.prompt if not isinstance(p.prompt, list) else p.prompt[0]
        self.negative_prompt = p.negative_prompt if not isinstance(p.negative_prompt, list) else p.negative_prompt[0]
        self.seed, self.subseed = int(seed), int(subseed)
        self.subseed_strength = p.subseed_strength
        self.width, self.height = p.width, p.height
        self.sampler_name, self.scheduler = p.sampler_name, p.scheduler
        self.cfg_scale, self.image_cfg_scale = p.cfg_scale, p.image_cfg_scale
        self.steps, self.batch_size = p.steps, p.batch_size
        self.restore_faces = p.restore_faces
        self.face_restoration_model = None
        self.sd_model_name, self.sd_model_hash = model.name, model.short_hash
        self.sd_vae_name = model.vae_info.name if model.vae_info else None
        self.sd_vae_hash = model.vae_info.short_hash if model.vae_info else None
        self.seed_resize_from_w, self.seed_resize_from_h = p.seed_resize_from_w, p.seed_resize_from_h
        self.denoising_strength = p.denoising_strength
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = job_timestamp
        self.clip_skip = p.job_options.CLIP_stop_at_last_layers
        self.is_using_inpainting_conditioning = p.is_using_inpainting_conditioning
        self.version = VERSION_TEXT
        self.files: list = []

    @classmethod
    def from_result(cls, p: StableDiffusionProcessingImg2Img, result: Img2ImgResult) -> Processed:
        """The facade's ``Processed`` for a :func:`~retouch.pipeline.generate` result."""
        processed = cls(p, result.images, seed=result.seeds[0], subseed=result.subseeds[0],
                        infotexts=result.infotexts, index_of_first_image=result.index_of_first_image,
                        job_timestamp=result.job_timestamp)
        processed.files = result.files
        return processed

    def js(self) -> str:
        obj = {
            "prompt": self.all_prompts[0], "all_prompts": self.all_prompts,
            "negative_prompt": self.all_negative_prompts[0], "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed, "all_seeds": self.all_seeds, "subseed": self.subseed, "all_subseeds": self.all_subseeds,
            "subseed_strength": self.subseed_strength, "width": self.width, "height": self.height,
            "sampler_name": self.sampler_name, "cfg_scale": self.cfg_scale, "steps": self.steps,
            "batch_size": self.batch_size, "restore_faces": self.restore_faces,
            "face_restoration_model": self.face_restoration_model, "sd_model_name": self.sd_model_name,
            "sd_model_hash": self.sd_model_hash, "sd_vae_name": self.sd_vae_name, "sd_vae_hash": self.sd_vae_hash,
            "seed_resize_from_w": self.seed_resize_from_w, "seed_resize_from_h": self.seed_resize_from_h,
            "denoising_strength": self.denoising_strength, "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image, "infotexts": self.infotexts, "styles": self.styles,
            "job_timestamp": self.job_timestamp, "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": self.is_using_inpainting_conditioning, "version": self.version,
        }
        return json.dumps(obj, default=lambda o: None)
