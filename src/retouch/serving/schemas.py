"""Request/response models of the A1111 txt2img and img2img API (``../shared/oracle/img2img_request_schema.json``).

Defaults are A1111's *API* defaults (they differ from the UI's: spec §7.1).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Names A1111's class knows but its API model drops: accepted and ignored, as A1111 does (spec §7.1).
IGNORED_FIELDS = {
    "sd_model", "outpath_samples", "outpath_grids", "extra_generation_params", "overlay_images",
    "do_not_reload_embeddings", "seed_enable_extras", "prompt_for_display", "sampler_noise_scheduler_override",
    "ddim_discretize", "token_merging_ratio", "token_merging_ratio_hr", "user", "scripts_value",
}


class GenerationRequest(BaseModel):
    """The fields both A1111 generation requests take (its ``StableDiffusionProcessing``)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int | None = -1
    subseed: int | None = -1
    subseed_strength: float | None = 0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int | None = 1
    n_iter: int | None = 1
    steps: int | None = 50
    cfg_scale: float | None = 7.0
    width: int | None = 512
    height: int | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    denoising_strength: float | None = 0.75
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None


class Img2ImgRequest(GenerationRequest):
    init_images: list[str] | None = None
    resize_mode: int | None = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = 4
    mask_blur_y: int | None = 4
    mask_blur: int | None = None
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    force_task_id: str | None = None
    sampler_index: str | None = "Euler"
    include_init_images: bool | None = False
    script_name: str | None = None
    script_args: list[Any] | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    infotext: str | None = None


class Txt2ImgRequest(GenerationRequest):
    enable_hr: bool | None = False
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""
    force_task_id: str | None = None
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list[Any] | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    infotext: str | None = None


class ExtrasRequest(BaseModel):
    """A1111's extras fields (its ``ExtrasBaseRequest``; other fields are ignored, as A1111 does)."""

    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0
    codeformer_visibility: float = 0
    codeformer_weight: float = 0
    upscaling_resize: float = 2
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = 0
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasRequest):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasRequest):
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 - A1111's name


class ImageToImageResponse(BaseModel):
    images: list[str]
    parameters: dict[str, Any]
    info: str


class TextToImageResponse(ImageToImageResponse):
    pass


class ProgressRequest(BaseModel):
    id_task: str | None = None
    id_live_preview: int = -1
    live_preview: bool = True


class InterruptRequest(BaseModel):
    id_task: str | None = None


class PNGInfoRequest(BaseModel):
    image: str
