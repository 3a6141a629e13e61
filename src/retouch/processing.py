"""A1111's public contract: ``StableDiffusionProcessingImg2Img`` + ``process_images`` → ``Processed``.

The class is a thin facade (spec §2, the seed): its fields are A1111's, validated into the core
:class:`~retouch.params.Img2ImgParams`; ``init()`` and ``sample()`` run the stages of
:mod:`retouch.pipeline` and keep A1111's state names (``init_latent``, ``image_conditioning``,
``mask``/``nmask`` — here, and only here, ``mask`` = 1 where the original is kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from retouch import conditioning, pipeline
from retouch.infotext import format_infotext, generation_params
from retouch.options import Options
from retouch.params import Img2ImgParams
from retouch.processed import Processed
from retouch.prompt_parser import parse_extra_networks_batch
from retouch.sampling import registry
from retouch.sampling.denoisers import Guidance
from retouch.sampling.img2img import SamplerSettings, run_img2img
from retouch.sampling.rng import ImageRNG

logger = logging.getLogger(__name__)


@dataclass
class JobControl:
    """Progress and cancellation for one job (what A1111 keeps in ``shared.state``)."""

    interrupted: bool = False
    skipped: bool = False
    job_count: int = -1
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    on_step: Callable[[JobControl, dict], None] | None = None

    def should_stop(self) -> bool:
        return self.interrupted or self.skipped


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(Img2ImgParams):
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
    mask: Any = None
    mask_blur: int | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    sampler_index: str | None = None
    force_task_id: str | None = None
    options: Options = field(default_factory=Options)
    styles_database: dict[str, tuple[str, str]] | None = None
    control: JobControl = field(default_factory=JobControl)
    filename_stem: str | None = None  # batch-from-folder naming

    def __post_init__(self) -> None:
        if self.mask is not None:
            self.image_mask = self.mask  # the seed: `mask` moves to `image_mask`, `mask` is reused below
        self.mask = None
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = self.options.initial_noise_multiplier
        if self.extra_generation_params is None:
            self.extra_generation_params = {}
        if self.comments is None:
            self.comments = {}
        if not self.seed_enable_extras:
            self.subseed, self.subseed_strength, self.seed_resize_from_h, self.seed_resize_from_w = -1, 0, 0, 0
        self.nmask = None
        self.init_latent = None
        self.image_conditioning = None
        self.overlay_images = None
        self.mask_for_overlay = None
        self.paste_to = None
        self.color_corrections = None
        self.is_using_inpainting_conditioning = False
        self.all_prompts = self.all_negative_prompts = self.all_seeds = self.all_subseeds = None
        self.job_options = self.options
        self._prepared = None
        self._pixels = None

    def to_params(self) -> Img2ImgParams:
        """The core parameters (validated)."""
        params = Img2ImgParams(**{name: getattr(self, name) for name in Img2ImgParams.field_names()})
        params.validate()
        return params

    def sample_decoration(self, iteration: int, index: int, seed: int) -> str:
        """The part of a saved sample's file name after the counter: the seed, or for folder batches
        ``<stem>`` / ``<stem>-<generation number>`` (spec §3.3)."""
        if self.filename_stem is None:
            return str(seed)
        if self.n_iter > 1 or self.batch_size > 1:
            return f"{self.filename_stem}-{iteration * self.batch_size + index + 1}"
        return self.filename_stem

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.sd_model.latent_channels, self.height // pipeline.LATENT_FACTOR, self.width // pipeline.LATENT_FACTOR)

    # -- A1111 init(): preprocess and encode, once per job ------------------------------------
    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        params = self.to_params()
        model, options = self.sd_model, self.job_options
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.image_cfg_scale = self.image_cfg_scale if model.is_pix2pix else None
        _check_inpaint_sizes(params)
        prepared = pipeline.prepare_inputs(params, options)
        self._prepared = prepared
        for text in prepared.comments:
            self.comment(text)
        if prepared.comments and pipeline.EMPTY_MASK_COMMENT in prepared.comments:
            self.inpaint_full_res = False
        self.extra_generation_params.update(prepared.extra_params)
        self.mask_for_overlay, self.paste_to = prepared.mask_for_overlay, prepared.paste_to
        self.overlay_images = prepared.overlay_images
        self.color_corrections = prepared.color_corrections
        with torch.inference_mode():
            pixels, self.batch_size = pipeline.batch_pixels(prepared.images, self.batch_size)
            if len(prepared.images) == 1:
                if prepared.overlay_images is not None:
                    self.overlay_images = prepared.overlay_images * self.batch_size
                if prepared.color_corrections is not None:
                    self.color_corrections = prepared.color_corrections * self.batch_size
            self._pixels = pixels
            self.init_latent = pipeline.encode_images(model, pixels, self.resize_mode, self.width, self.height)
            if prepared.image_mask is not None:
                self.mask, self.nmask = pipeline.make_latent_masks(prepared.latent_mask, self.init_latent, self.mask_round)
                first_noise = lambda: self._rng(all_seeds[: self.init_latent.shape[0]], None).next()  # noqa: E731
                self.init_latent, extra = pipeline.apply_masked_content(
                    self.init_latent, self.mask, self.nmask, self.inpainting_fill, first_noise)
                self.extra_generation_params.update(extra)
            self.image_conditioning = pipeline.image_conditioning(
                model, pixels * 2 - 1, self.init_latent, prepared.image_mask, self.mask_round,
                options.inpainting_mask_weight)
        self.is_using_inpainting_conditioning = model.is_inpainting

    def _rng(self, seeds: list[int], subseeds: list[int] | None) -> ImageRNG:
        options = self.job_options
        return ImageRNG(self.latent_shape, seeds, subseeds=subseeds,
                        subseed_strength=self.subseed_strength if subseeds is not None else 0.0,
                        seed_resize_from_h=self.seed_resize_from_h if subseeds is not None else 0,
                        seed_resize_from_w=self.seed_resize_from_w if subseeds is not None else 0,
                        source=options.randn_source, device=self.sd_model.device,
                        eta_noise_seed_delta=options.eta_noise_seed_delta if subseeds is not None else 0)

    # -- A1111 sample(): one batch ---------------------------------------------------------------
    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        options, model = self.job_options, self.sd_model
        rng = self.rng if getattr(self, "rng", None) is not None else self._rng(seeds, subseeds)
        x = rng.next()
        if self.initial_noise_multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = self.initial_noise_multiplier
            x = x * self.initial_noise_multiplier
        sampler, scheduler = registry.resolve_sampler_and_scheduler(self.sampler_name, self.scheduler)
        settings = SamplerSettings(
            sampler=sampler, scheduler=scheduler, steps=self.steps, denoising_strength=self.denoising_strength,
            cfg_scale=self.cfg_scale, image_cfg_scale=self.image_cfg_scale, eta=self.eta, s_churn=self.s_churn,
            s_tmin=self.s_tmin, s_tmax=self.s_tmax, s_noise=self.s_noise,
            s_min_uncond=self.s_min_uncond)
        guidance = Guidance(conditioning, unconditional_conditioning, self.cfg_scale, self.image_conditioning,
                            self.s_min_uncond if self.s_min_uncond is not None else options.s_min_uncond)
        control = self.control
        steps_total = _sampling_steps(settings, options)
        control.sampling_steps, control.sampling_step = steps_total, 0

        def callback(d: dict) -> None:
            control.sampling_step = d["i"]
            if control.on_step is not None:
                control.on_step(control, d)

        empty = None
        if options.pad_cond_uncond:
            empty = model.get_learned_conditioning([""], options)[0]
        alphas_cumprod = model.alphas_cumprod
        if options.use_downcasted_alpha_bar:
            self.extra_generation_params["Downcast alphas_cumprod"] = True
            alphas_cumprod = alphas_cumprod.half().float()
        if options.sd_noise_schedule == "Zero Terminal SNR":
            self.extra_generation_params["Noise Schedule"] = options.sd_noise_schedule
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        result = run_img2img(
            model.apply_model, alphas_cumprod, model.parameterization == "v", settings, options,
            init_latent=self.init_latent, noise=x, rng=rng, seeds=list(seeds), guidance=guidance, mask=self.mask,
            nmask=self.nmask, empty_cond=empty, callback=callback, should_stop=control.should_stop)
        self.extra_generation_params.update(result.extra_params)
        samples = result.latents
        if self.mask is not None:
            samples = samples * self.nmask + self.init_latent * self.mask
        return samples


def _check_supported(p: StableDiffusionProcessingImg2Img) -> None:
    """Settings A1111 honours that retouch cannot: refuse them rather than ignore them."""
    o = p.job_options
    unsupported = {
        "refiner_checkpoint": p.refiner_checkpoint not in (None, "", "None", "none"),
        "sd_vae_encode_method": o.sd_vae_encode_method != "Full",
        "sd_vae_decode_method": o.sd_vae_decode_method != "Full",
        "upscaler_for_img2img": o.upscaler_for_img2img not in (None, "", "None"),
        "token_merging_ratio": o.token_merging_ratio > 0 or o.token_merging_ratio_img2img > 0,
        "use_old_emphasis_implementation": o.use_old_emphasis_implementation,
        "face_restoration": bool(p.restore_faces) or (p.restore_faces is None and o.face_restoration),
    }
    for name, used in unsupported.items():
        if used:
            raise ValueError(f"{name}: not supported by retouch (TAESD, upscaler models, token merging, face "
                             "restoration, refiner switching and the pre-1.0 emphasis are out of scope); "
                             "leave it at its default")


def _sampling_steps(settings: SamplerSettings, options: Options) -> int:
    from retouch.sampling.img2img import img2img_steps

    return img2img_steps(settings.steps, settings.denoising_strength, options.img2img_fix_steps)[1] + 1


def _check_inpaint_sizes(params: Img2ImgParams) -> None:
    """Fail before sampling where A1111 fails after it ("images do not match", spec §9.7–§9.8)."""
    if params.image_mask is None or params.inpaint_full_res:
        return
    if params.width % 8 or params.height % 8:
        raise ValueError(f"width/height: images do not match — whole-picture inpainting needs a width and height "
                         f"that are multiples of 8, got {params.width}x{params.height}")
    if params.resize_mode == 3 and any(img.size != (params.width, params.height) for img in params.init_images):
        raise ValueError("resize_mode: images do not match — latent upscale (3) cannot inpaint an image whose size "
                         "differs from width x height; use resize mode 0-2")


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A1111's "Zero Terminal SNR" noise schedule: √ᾱ shifted and scaled so that it ends at (almost) 0."""
    sqrt_ac = alphas_cumprod.sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    out = sqrt_ac**2
    out[-1] = 4.8973451890853435e-08
    return out


def process_images(p: StableDiffusionProcessingImg2Img) -> Processed:
    """Run the job described by ``p`` (A1111 ``process_images``). Options come from ``p.options`` with
    ``p.override_settings`` applied to a copy (nothing global changes, so nothing needs restoring)."""
    if p.sd_model is None:
        raise ValueError("sd_model: no model given; pass sd_model=retouch.load_model(...)")
    p.job_options = p.options.with_overrides(p.override_settings)
    wanted = p.job_options.sd_model_checkpoint
    if wanted and wanted not in (p.sd_model.name, p.sd_model.title, p.sd_model.path.name):
        logger.warning("override_settings.sd_model_checkpoint=%r is not the model passed in (%s); using %s",
                       wanted, p.sd_model.title, p.sd_model.title)
    sampler, scheduler = registry.resolve_sampler_and_scheduler(p.sampler_name or p.sampler_index, p.scheduler)
    if (p.sampler_name, p.scheduler) != (sampler.name, scheduler.label):
        if p.sampler_name is not None:
            logger.info("sampler/schedule %r/%r → %r/%r", p.sampler_name, p.scheduler, sampler.name, scheduler.label)
        p.sampler_name, p.scheduler = sampler.name, scheduler.label
    p.to_params()  # validate everything before any work
    _check_supported(p)
    p.sd_model.set_tiling(bool(p.tiling if p.tiling is not None else p.job_options.tiling))
    try:
        return _process_images_inner(p)
    finally:
        p.sd_model.set_tiling(False)


@dataclass
class _Outputs:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    files: list = field(default_factory=list)


def _process_images_inner(p: StableDiffusionProcessingImg2Img) -> Processed:
    options = p.job_options
    job_timestamp = time.strftime("%Y%m%d%H%M%S")
    comments: list[str] = []
    p.all_prompts, p.all_negative_prompts = pipeline.expand_prompts(p.to_params(), p.styles_database, comments)
    for c in comments:
        p.comment(c)
    _, _, p.all_seeds, p.all_subseeds = pipeline.expand_seeds(p.to_params(), len(p.all_prompts))
    p.tiling = bool(p.tiling if p.tiling is not None else options.tiling)
    p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
    control = p.control
    if control.job_count == -1:
        control.job_count = p.n_iter
    out = _Outputs()
    batch = (p.all_prompts[:1], p.all_negative_prompts[:1], p.all_seeds[:1], p.all_subseeds[:1])
    for n in range(p.n_iter):
        control.job_no = n
        control.skipped = False
        if control.interrupted:
            break
        b = p.batch_size
        prompts, negatives = p.all_prompts[n * b:(n + 1) * b], p.all_negative_prompts[n * b:(n + 1) * b]
        if not prompts:
            break
        batch = (prompts, negatives, p.all_seeds[n * b:(n + 1) * b], p.all_subseeds[n * b:(n + 1) * b])
        for i, image in enumerate(_run_batch(p, batch)):
            _postprocess(p, image, n, i, batch, out)
        control.job_no = n + 1
    if not out.infotexts:
        out.infotexts.append(make_infotext(p, *batch))
    index_of_first_image = _grid(p, batch, out)
    processed = Processed(p, out.images, seed=p.all_seeds[0], subseed=p.all_subseeds[0], infotexts=out.infotexts,
                          index_of_first_image=index_of_first_image, job_timestamp=job_timestamp)
    processed.files = out.files
    return processed


def _run_batch(p: StableDiffusionProcessingImg2Img, batch) -> list[Image.Image]:
    """Conditioning, sampling and decoding of one batch (A1111's loop body up to the decode)."""
    prompts, negatives, seeds, subseeds = batch
    model, options = p.sd_model, p.job_options
    p.rng = p._rng(seeds, subseeds)
    texts, networks = parse_extra_networks_batch(prompts)
    if not p.disable_extra_networks:
        for comment in conditioning.extra_network_comments(networks):
            p.comment(comment)
    total_steps = registry.find_sampler(p.sampler_name).total_steps(p.steps)
    with torch.inference_mode():
        uc = conditioning.get_learned_conditioning(model.text_encoder, negatives, total_steps, options)
        c = conditioning.get_multicond_learned_conditioning(model.text_encoder, texts, total_steps, options)
        samples = p.sample(c, uc, seeds, subseeds, p.subseed_strength, prompts)
        decoded = pipeline.decode_latents(model, samples)
    while model.notes:
        p.comment(model.notes.pop(0))
    p.rng = None
    return decoded


def _postprocess(p: StableDiffusionProcessingImg2Img, image: Image.Image, n: int, i: int, batch, out: _Outputs):
    """Colour correction, paste-back/overlay, saving and the extra mask outputs of one image (spec §3.7)."""
    from retouch.imageops.color import apply_color_correction
    from retouch.imageops.masking import apply_overlay
    from retouch.outputs import save_image

    options = p.job_options
    save = not p.do_not_save_samples and p.outpath_samples is not None
    seed = batch[2][i]
    overlay = None
    if options.overlay_inpaint and p.overlay_images is not None and i < len(p.overlay_images):
        overlay = p.overlay_images[i]
    text = make_infotext(p, *batch, index=i)
    stored_text = text if options.enable_pnginfo else None

    def store(img: Image.Image, suffix: str = "") -> None:
        out.files.append(_save(save_image, img, p.outpath_samples, p.sample_decoration(n, i, seed), stored_text,
                               options, suffix=suffix))

    if p.color_corrections is not None and i < len(p.color_corrections):
        if save and options.save_images_before_color_correction:
            store(apply_overlay(image, p.paste_to, overlay)[0], "-before-color-correction")
        image = apply_color_correction(p.color_corrections[i], image)
    image, original_denoised = apply_overlay(image, p.paste_to, overlay)
    if save:
        store(image)
    out.infotexts.append(text)
    if options.enable_pnginfo:
        image.info["parameters"] = text
    out.images.append(image)
    mask_image, composite = _mask_outputs(p, image, original_denoised, options)
    if save and mask_image is not None and options.save_mask:
        store(mask_image, "-mask")
    if save and composite is not None and options.save_mask_composite:
        store(composite, "-mask-composite")
    if options.return_mask and mask_image is not None:
        out.images.append(mask_image)
    if options.return_mask_composite and composite is not None:
        out.images.append(composite)


def _grid(p: StableDiffusionProcessingImg2Img, batch, out: _Outputs) -> int:
    """Prepend (and save) the grid when A1111 would; returns ``index_of_first_image``."""
    from retouch.imageops.grid import image_grid
    from retouch.outputs import save_image

    options = p.job_options
    unwanted = len(out.images) < 2 and options.grid_only_if_multiple
    if not (options.return_grid or options.grid_save) or p.do_not_save_grid or unwanted:
        return 0
    grid = image_grid(out.images, p.batch_size, n_rows=options.n_rows,
                      prevent_empty_spots=options.grid_prevent_empty_spots, background=options.grid_background_color)
    text = make_infotext(p, *batch, use_main_prompt=True)
    index_of_first_image = 0
    if options.return_grid:
        out.infotexts.insert(0, text)
        if options.enable_pnginfo:
            grid.info["parameters"] = text
        out.images.insert(0, grid)
        index_of_first_image = 1
    if options.grid_save and p.outpath_grids is not None:
        out.files.insert(0, _save(save_image, grid, p.outpath_grids, "", text if options.enable_pnginfo else None,
                                  options, basename="grid", extension=options.grid_format))
    return index_of_first_image


def _save(save_image, image, folder, decoration, text, options, basename="", extension=None, suffix=""):
    return save_image(image, folder, decoration=decoration, infotext=text, extension=extension or options.samples_format,
                      basename=basename, suffix=suffix, jpeg_quality=options.jpeg_quality,
                      webp_lossless=options.webp_lossless)


def _mask_outputs(p, image, original_denoised, options):
    """The optional mask and mask-composite images (spec §3.7; they carry no infotext)."""
    from retouch.imageops.resize import resize_image

    if p.mask_for_overlay is None:
        return None, None
    mask_image = composite = None
    if options.return_mask or options.save_mask:
        mask_image = p.mask_for_overlay.convert("RGB")
    if options.return_mask_composite or options.save_mask_composite:
        mask = resize_image(2, p.mask_for_overlay, image.width, image.height).convert("L")
        composite = Image.composite(original_denoised.convert("RGBA").convert("RGBa"), Image.new("RGBa", image.size),
                                    mask).convert("RGBA")
    return mask_image, composite


def make_infotext(p: StableDiffusionProcessingImg2Img, prompts, negatives, seeds, subseeds, *, index: int = 0,
                  use_main_prompt: bool = False) -> str:
    """The infotext of image ``index`` of a batch (A1111 ``create_infotext``)."""
    options, model = p.job_options, p.sd_model
    sampler = registry.find_sampler(p.sampler_name)
    uses_ensd = options.eta_noise_seed_delta != 0 and sampler.uses_ensd and _eta(p, sampler) != 0
    params = generation_params(
        steps=p.steps, sampler_name=p.sampler_name, scheduler_label=p.scheduler, cfg_scale=p.cfg_scale,
        image_cfg_scale=p.image_cfg_scale, seed=p.all_seeds[0] if use_main_prompt else seeds[index],
        width=p.width, height=p.height, model_hash=model.short_hash, model_name=model.name,
        vae_hash=model.vae_info.short_hash if model.vae_info else None,
        vae_name=model.vae_info.name if model.vae_info else None,
        subseed=p.all_subseeds[0] if use_main_prompt else subseeds[index], subseed_strength=p.subseed_strength,
        seed_resize_from_w=p.seed_resize_from_w, seed_resize_from_h=p.seed_resize_from_h,
        conditional_mask_weight=options.inpainting_mask_weight if p.is_using_inpainting_conditioning else None,
        clip_skip=options.CLIP_stop_at_last_layers, ensd=options.eta_noise_seed_delta if uses_ensd else None,
        token_merging_ratio=options.token_merging_ratio_img2img or options.token_merging_ratio,
        init_img_hash=p._prepared.init_img_hash if p._prepared else None, randn_source=options.randn_source,
        tiling=bool(p.tiling), extra=p.extra_generation_params, options=options)
    prompt = p.all_prompts[0] if use_main_prompt else prompts[index]
    negative = p.all_negative_prompts[0] if use_main_prompt else negatives[index]
    return format_infotext(prompt, negative, params)


def _eta(p, sampler) -> float:
    if p.eta is not None:
        return p.eta
    if sampler.kind == registry.TIMESTEP:
        return p.job_options.eta_ddim
    return p.job_options.eta_ancestral


def _mask_blur_get(self) -> int | None:
    return self.mask_blur_x if self.mask_blur_x == self.mask_blur_y else None


def _mask_blur_set(self, value) -> None:
    if isinstance(value, int):
        self.mask_blur_x = value
        self.mask_blur_y = value


# The seed: `mask_blur` is a property over mask_blur_x/y; setting an int sets both (and, being applied
# after them in the constructor, wins); other values are ignored.
StableDiffusionProcessingImg2Img.mask_blur = property(_mask_blur_get, _mask_blur_set)  # type: ignore[assignment]
