"""``Processed``: the result of a job, with A1111's fields and its ``js()`` info JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from retouch.infotext import VERSION_TEXT

if TYPE_CHECKING:
    from retouch.models.model import Model
    from retouch.options import Options
    from retouch.params import GenerationParams
    from retouch.pipeline import GenerationResult


@dataclass
class Processed:
    """The result of :func:`~retouch.processing.process_images`, with A1111's fields and ``js()`` info JSON.

    Built from a job's parameters, its model and options, and the :func:`~retouch.pipeline.generate`
    result (:meth:`from_result`).
    """

    images: list[Image.Image]
    infotexts: list[str]
    info: str
    comments: str
    all_prompts: list[str]
    all_negative_prompts: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    prompt: str
    negative_prompt: str
    seed: int
    subseed: int
    subseed_strength: float
    width: int
    height: int
    sampler_name: str
    scheduler: str
    cfg_scale: float
    image_cfg_scale: float | None
    steps: int
    batch_size: int
    restore_faces: bool | None
    sd_model_name: str
    sd_model_hash: str | None
    sd_vae_name: str | None
    sd_vae_hash: str | None
    seed_resize_from_w: int
    seed_resize_from_h: int
    denoising_strength: float
    extra_generation_params: dict[str, Any]
    index_of_first_image: int
    styles: list[str]
    job_timestamp: str
    clip_skip: int
    is_using_inpainting_conditioning: bool
    face_restoration_model: str | None = None
    version: str = VERSION_TEXT
    files: list[Path] = field(default_factory=list)

    @classmethod
    def from_result(cls, params: GenerationParams, model: Model, options: Options, result: GenerationResult,
                    ) -> Processed:
        prompt, negative = params.prompt, params.negative_prompt
        vae = model.vae_info
        return cls(
            images=result.images, infotexts=result.infotexts, info=result.infotexts[0] if result.infotexts else "",
            comments="".join(f"{c}\n" for c in result.comments), all_prompts=result.prompts,
            all_negative_prompts=result.negative_prompts, all_seeds=result.seeds, all_subseeds=result.subseeds,
            prompt=prompt if isinstance(prompt, str) else prompt[0],
            negative_prompt=negative if not isinstance(negative, list) else negative[0],
            seed=int(result.seeds[0]), subseed=int(result.subseeds[0]), subseed_strength=params.subseed_strength,
            width=params.width, height=params.height, sampler_name=result.sampler_name, scheduler=result.scheduler,
            cfg_scale=params.cfg_scale, image_cfg_scale=getattr(params, "image_cfg_scale", None) if model.is_pix2pix else None,
            steps=params.steps, batch_size=result.batch_size, restore_faces=params.restore_faces,
            sd_model_name=model.name, sd_model_hash=model.short_hash, sd_vae_name=vae.name if vae else None,
            sd_vae_hash=vae.short_hash if vae else None, seed_resize_from_w=params.seed_resize_from_w,
            seed_resize_from_h=params.seed_resize_from_h, denoising_strength=getattr(params, "denoising_strength", 0.0),
            extra_generation_params=result.extra_generation_params,
            index_of_first_image=result.index_of_first_image, styles=params.styles,
            job_timestamp=result.job_timestamp, clip_skip=options.CLIP_stop_at_last_layers,
            is_using_inpainting_conditioning=model.is_inpainting, files=result.files)

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
