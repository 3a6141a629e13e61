"""Stage 5: from decoded images to results — colour correction, paste-back and overlay, the optional
mask outputs, the grid, and the infotext facts of the job (spec §3.7, §6)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from retouch.imageops.color import apply_color_correction
from retouch.imageops.grid import image_grid
from retouch.imageops.masking import apply_overlay, overlay_image
from retouch.imageops.resize import flatten, resize_image
from retouch.imageops.soft_mask import adaptive_overlay_mask
from retouch.infotext import GenerationInfo
from retouch.models.model import Model
from retouch.modes import ResizeMode
from retouch.options import Options
from retouch.params import Job
from retouch.pipeline.latents import InitState
from retouch.pipeline.sample import image_cfg_scale


@dataclass(frozen=True)
class FinishedImage:
    image: Image.Image  # the result (colour-corrected, pasted back, overlaid)
    before_color_correction: Image.Image | None  # only when asked for and colour correction ran
    mask_image: Image.Image | None  # the overlay mask as RGB (return_mask / save_mask)
    mask_composite: Image.Image | None  # the result through the mask (return/save_mask_composite)


@dataclass(frozen=True)
class Overlays:
    """A batch's own overlays and overlay masks (soft inpainting makes them from the sampled latents)."""

    images: list[Image.Image]
    masks: list[Image.Image]


def finish_image(decoded: Image.Image, index: int, init: InitState, options: Options, *,
                 keep_before_color_correction: bool = False, overlays: Overlays | None = None) -> FinishedImage:
    """Image ``index`` of a batch after decoding → what the job returns and saves (spec §3.7)."""
    prepared = init.prepared
    overlay = None
    mask_for_overlay = prepared.mask_for_overlay
    if options.overlay_inpaint and init.overlay_images is not None and index < len(init.overlay_images):
        overlay = init.overlay_images[index]
    if overlays is not None:  # soft inpainting replaces both, whatever overlay_inpaint says (as A1111)
        overlay, mask_for_overlay = overlays.images[index], overlays.masks[index]
    before = None
    if init.color_corrections is not None and index < len(init.color_corrections):
        if keep_before_color_correction:
            before = apply_overlay(decoded, prepared.paste_to, overlay, prepared.enlarge)[0]
        decoded = apply_color_correction(init.color_corrections[index], decoded)
    image, original_denoised = apply_overlay(decoded, prepared.paste_to, overlay, prepared.enlarge)
    mask_image, composite = _mask_outputs(mask_for_overlay, image, original_denoised, options)
    return FinishedImage(image, before, mask_image, composite)


def soft_overlays(job: Job, init: InitState, samples: torch.Tensor, options: Options) -> Overlays | None:
    """Soft inpainting's overlays for a batch (A1111 ``post_sample``): the original images, flattened and resized
    as for the normal overlay, shown through masks made from how far each sampled latent moved from the
    original (:func:`~retouch.imageops.soft_mask.adaptive_overlay_mask`)."""
    params, settings, blend = job.params, getattr(job.params, "soft_inpainting", None), init.blend
    if settings is None or blend is None or not params.uses_soft_inpainting:
        return None
    paste_to = init.prepared.paste_to
    sources = []
    for img in params.init_images:
        image = flatten(img, options.img2img_background_color)
        if paste_to is None and params.resize_mode != ResizeMode.LATENT_UPSCALE:
            image = resize_image(params.resize_mode, image, params.width, params.height, init.prepared.enlarge)
        sources.append(image)
    if len(sources) == 1:
        sources = sources * init.batch_size
    repaint = blend.repaint[0].float()  # (C, h, w): one mask for the whole batch
    influence = settings.mask_influence
    scaled = 1 - torch.clamp(repaint, min=0, max=1) ** (settings.preservation_strength / 2)
    scaled = 0.5 * (1 - influence) + scaled * influence
    scalar = (scaled / (1.00001 - scaled)).cpu().numpy()
    distances = torch.norm(samples - blend.original, p=2, dim=1)
    images, masks = [], []
    for distance, source in zip(distances, sources, strict=False):
        mask = adaptive_overlay_mask(distance.float().cpu().numpy(), settings.difference_threshold * scalar,
                                     settings.difference_contrast, params.width, params.height, paste_to,
                                     (source.width, source.height))
        masks.append(mask)
        images.append(overlay_image(source, mask))
    return Overlays(images, masks)


def _mask_outputs(mask_for_overlay: Image.Image | None, image: Image.Image, original_denoised: Image.Image,
                  options: Options) -> tuple[Image.Image | None, Image.Image | None]:
    """The optional mask and mask-composite images (spec §3.7; they carry no infotext)."""
    if mask_for_overlay is None:
        return None, None
    mask_image = composite = None
    if options.return_mask or options.save_mask:
        mask_image = mask_for_overlay.convert("RGB")
    if options.return_mask_composite or options.save_mask_composite:
        mask = resize_image(2, mask_for_overlay, image.width, image.height).convert("L")
        composite = Image.composite(original_denoised.convert("RGBA").convert("RGBa"), Image.new("RGBa", image.size),
                                    mask).convert("RGBA")
    return mask_image, composite


def make_grid(images: list[Image.Image], batch_size: int, options: Options, wanted: bool) -> Image.Image | None:
    """The grid A1111 puts first (and saves) when there are at least two images and the options ask."""
    unwanted = len(images) < 2 and options.grid_only_if_multiple
    if not wanted or not (options.return_grid or options.grid_save) or unwanted:
        return None
    return image_grid(images, batch_size, n_rows=options.n_rows, prevent_empty_spots=options.grid_prevent_empty_spots,
                      background=options.grid_background_color)


def generation_info(job: Job, model: Model, options: Options, init: InitState | None,
                    tiling: bool) -> GenerationInfo:
    """The infotext facts of a job (A1111 ``create_infotext``'s inputs other than the per-image ones)."""
    params, sampler = job.params, job.sampler
    uses_ensd = options.eta_noise_seed_delta != 0 and sampler.uses_ensd and job.resolved.eta != 0
    vae = model.vae_info
    return GenerationInfo(
        steps=params.steps, sampler_name=sampler.name, scheduler_label=job.scheduler.label, cfg_scale=params.cfg_scale,
        image_cfg_scale=image_cfg_scale(job, model), width=params.width, height=params.height,
        model_hash=model.short_hash, model_name=model.name, vae_hash=vae.short_hash if vae else None,
        vae_name=vae.name if vae else None, subseed_strength=params.subseed_strength,
        seed_resize_from_w=params.seed_resize_from_w, seed_resize_from_h=params.seed_resize_from_h,
        conditional_mask_weight=options.inpainting_mask_weight if model.is_inpainting else None,
        clip_skip=options.CLIP_stop_at_last_layers, ensd=options.eta_noise_seed_delta if uses_ensd else None,
        token_merging_ratio=job.resolved.token_merging_ratio,
        token_merging_ratio_hr=job.resolved.token_merging_ratio_hr if getattr(params, "enable_hr", False) else 0.0,
        init_img_hash=init.prepared.init_img_hash if init else None, randn_source=options.randn_source, tiling=tiling)
