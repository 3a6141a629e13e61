"""The img2img / inpainting pipeline as explicit stages (A1111 ``StableDiffusionProcessingImg2Img.init``,
``sample`` and the decode/composite part of ``process_images``).

prepare_inputs → encode_images → make_latent_masks / apply_masked_content → image_conditioning →
(per batch) sample_batch → decode_latents → composite. Each stage is a function of explicit inputs;
:mod:`retouch.processing` strings them together behind A1111's facade.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps

from retouch.imageops import masking
from retouch.imageops.color import color_correction_target
from retouch.imageops.resize import flatten, resize_image
from retouch.options import Options
from retouch.params import Img2ImgParams, InpaintFill, ResizeMode

LATENT_FACTOR = 8
EMPTY_MASK_COMMENT = 'Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.'


# ---------------------------------------------------------------------------------------------
# Prompts and seeds (A1111 setup_prompts, get_fixed_seed)
def expand_prompts(params: Img2ImgParams, styles: dict[str, tuple[str, str]] | None = None,
                   comments: list[str] | None = None) -> tuple[list[str], list[str]]:
    """``all_prompts`` and ``all_negative_prompts`` (length batch_size·n_iter), styles applied."""
    from retouch.prompt_parser import apply_styles

    negative = params.negative_prompt if params.negative_prompt is not None else ""
    if isinstance(params.prompt, list):
        prompts = list(params.prompt)
    elif isinstance(negative, list):
        prompts = [params.prompt] * len(negative)
    else:
        prompts = [params.prompt] * (params.batch_size * params.n_iter)
    negatives = list(negative) if isinstance(negative, list) else [negative] * len(prompts)
    if len(prompts) != len(negatives):
        raise ValueError(f"negative_prompt: received a different number of prompts ({len(prompts)}) and "
                         f"negative prompts ({len(negatives)})")
    styles = styles or {}
    missing = [name for name in params.styles if name not in styles]
    if missing and comments is not None:
        comments.append("Styles not found: " + ", ".join(missing))
    chosen = [styles.get(name, ("", "")) for name in params.styles]
    prompts = [apply_styles(p, [s[0] for s in chosen]) for p in prompts]
    negatives = [apply_styles(p, [s[1] for s in chosen]) for p in negatives]
    return prompts, negatives


def fixed_seed(seed: int | str | None) -> int:
    """A1111 ``get_fixed_seed``: -1, None, "" and unparsable strings → random in [0, 4294967293]."""
    if seed is None or seed == "":
        seed = -1
    elif isinstance(seed, str):
        try:
            seed = int(seed)
        except ValueError:
            seed = -1
    if seed == -1:
        return int(random.randrange(4294967294))
    return int(seed)


def expand_seeds(params: Img2ImgParams, n: int) -> tuple[int, int, list[int], list[int]]:
    """``(seed, subseed, all_seeds, all_subseeds)`` for ``n`` images (spec §5.1–§5.2)."""
    seed = params.seed if isinstance(params.seed, list) else fixed_seed(params.seed)
    subseed = params.subseed if isinstance(params.subseed, list) else fixed_seed(params.subseed)
    if isinstance(seed, list):
        all_seeds = [int(s) for s in seed]
    else:
        all_seeds = [seed + (k if params.subseed_strength == 0 else 0) for k in range(n)]
    all_subseeds = [int(s) for s in subseed] if isinstance(subseed, list) else [subseed + k for k in range(n)]
    first_seed = all_seeds[0] if isinstance(seed, list) else seed
    first_subseed = all_subseeds[0] if isinstance(subseed, list) else subseed
    return first_seed, first_subseed, all_seeds, all_subseeds


# ---------------------------------------------------------------------------------------------
@dataclass
class PreparedInputs:
    """Processed init images and masks. Masks: 255 = repaint."""

    images: list[Image.Image]  # W×H RGB (after crop, fill) — what the VAE encodes
    image_mask: Image.Image | None = None  # W×H processed mask (None: no inpainting)
    latent_mask: Image.Image | None = None  # the mask for fill and the latent blend
    mask_for_overlay: Image.Image | None = None
    overlay_images: list[Image.Image] | None = None
    paste_to: tuple[int, int, int, int] | None = None
    inpaint_full_res: bool = False
    init_img_hash: str | None = None
    color_corrections: list | None = None  # LAB targets, one per init image
    extra_params: dict = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)


def prepare_inputs(params: Img2ImgParams, options: Options) -> PreparedInputs:
    """Flatten, resize/crop, mask, overlay and fill the init images (spec §3.1–§3.7)."""
    out = PreparedInputs(images=[])
    crop = None
    image_mask = params.image_mask
    if image_mask is not None:
        image_mask, crop = _prepare_mask(params, out)
    latent_source = params.latent_mask if params.latent_mask is not None else image_mask
    out.latent_mask = latent_source
    out.image_mask = image_mask
    if image_mask is not None:
        out.overlay_images = []
    for img in params.init_images:
        if options.save_init_img:
            out.init_img_hash = hashlib.md5(img.tobytes()).hexdigest()
        image = flatten(img, options.img2img_background_color)
        if crop is None and params.resize_mode != ResizeMode.LATENT_UPSCALE:
            image = resize_image(params.resize_mode, image, params.width, params.height)
        if image_mask is not None:
            if out.mask_for_overlay.size != image.size:
                out.mask_for_overlay = resize_image(params.resize_mode, out.mask_for_overlay, image.width, image.height)
            out.overlay_images.append(masking.overlay_image(image, out.mask_for_overlay))
        if crop is not None:
            image = resize_image(ResizeMode.RESIZE_AND_FILL, image.crop(crop), params.width, params.height)
        if image_mask is not None and params.inpainting_fill != InpaintFill.ORIGINAL:
            image = masking.fill(image, _same_size(latent_source, image, params.resize_mode))
            if params.inpainting_fill == InpaintFill.FILL:
                out.extra_params["Masked content"] = "fill"
        if options.img2img_color_correction:
            out.color_corrections = (out.color_corrections or []) + [color_correction_target(image)]
        out.images.append(image)
    return out


def _same_size(mask: Image.Image, image: Image.Image, resize_mode: int) -> Image.Image:
    if mask.size != image.size:
        raise ValueError(f"image_mask: images do not match (mask {mask.width}x{mask.height}, "
                         f"image {image.width}x{image.height}); use a width/height that are multiples of 8, "
                         "or resize mode 0-2 when inpainting")
    return mask


def _prepare_mask(params: Img2ImgParams, out: PreparedInputs):
    mask = masking.create_binary_mask(params.image_mask, round=params.mask_round)
    if params.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
        out.extra_params["Mask mode"] = "Inpaint not masked"
    mask = masking.gaussian_blur_mask(mask, params.mask_blur_x, params.mask_blur_y)
    if params.mask_blur_x > 0 or params.mask_blur_y > 0:
        out.extra_params["Mask blur"] = params.mask_blur_x if params.mask_blur_x == params.mask_blur_y else None
    crop = None
    if params.inpaint_full_res:
        out.mask_for_overlay = mask
        mask_l = mask.convert("L")
        crop = masking.get_crop_region(mask_l, params.inpaint_full_res_padding)
        if crop is None:  # spec §3.5.2 step 3: blank mask → plain img2img
            out.mask_for_overlay = None
            out.comments.append(EMPTY_MASK_COMMENT)
            return None, None
        crop = masking.expand_crop_region(crop, params.width, params.height, mask_l.width, mask_l.height)
        x1, y1, x2, y2 = crop
        image_mask = resize_image(ResizeMode.RESIZE_AND_FILL, mask_l.crop(crop), params.width, params.height)
        out.paste_to = (x1, y1, x2 - x1, y2 - y1)
        out.inpaint_full_res = True
        out.extra_params["Inpaint area"] = "Only masked"
        out.extra_params["Masked area padding"] = params.inpaint_full_res_padding
        return image_mask, crop
    image_mask = resize_image(params.resize_mode, mask, params.width, params.height)
    doubled = np.clip(np.array(image_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
    out.mask_for_overlay = Image.fromarray(doubled)
    return image_mask, None


# ---------------------------------------------------------------------------------------------
def batch_pixels(images: list[Image.Image], batch_size: int) -> tuple[torch.Tensor, int]:
    """Images → ``(B, 3, H, W)`` float in [0, 1]; one image is repeated ``batch_size`` times, several
    images shrink the batch to their count (spec §3.14)."""
    arrays = [np.moveaxis(np.array(img).astype(np.float32) / 255.0, 2, 0) for img in images]
    if len(arrays) == 1:
        return torch.from_numpy(np.expand_dims(arrays[0], 0).repeat(batch_size, axis=0)), batch_size
    if len(arrays) > batch_size:
        raise ValueError(f"init_images: bad number of images passed: {len(arrays)}; expecting {batch_size} or less")
    return torch.from_numpy(np.array(arrays)), len(arrays)


def encode_images(model, pixels: torch.Tensor, resize_mode: int, width: int, height: int) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] → init latents; latent-upscale mode resizes the latent bilinearly."""
    init_latent = model.encode_first_stage(pixels * 2 - 1)
    if resize_mode == ResizeMode.LATENT_UPSCALE:
        init_latent = torch.nn.functional.interpolate(
            init_latent, size=(height // LATENT_FACTOR, width // LATENT_FACTOR), mode="bilinear")
    return init_latent


def make_latent_masks(mask: Image.Image, init_latent: torch.Tensor, round_mask: bool,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, repaint)`` masks ``(C, h, w)``: the facade's ``mask`` (1 = keep) and ``nmask`` (1 = repaint)."""
    latmask = masking.latent_mask(mask, init_latent.shape[3], init_latent.shape[2], round_mask)
    latmask = np.tile(latmask[None], (init_latent.shape[1], 1, 1))
    keep = torch.asarray(1.0 - latmask).to(init_latent)
    repaint = torch.asarray(latmask).to(init_latent)
    return keep, repaint


def apply_masked_content(init_latent: torch.Tensor, keep: torch.Tensor, repaint: torch.Tensor, fill: int,
                         first_noise) -> tuple[torch.Tensor, dict]:
    """Latent noise / latent nothing (spec §3.6). ``first_noise()`` gives the first batch's initial noise."""
    if fill == InpaintFill.LATENT_NOISE:
        return init_latent * keep + first_noise() * repaint, {"Masked content": "latent noise"}
    if fill == InpaintFill.LATENT_NOTHING:
        return init_latent * keep, {"Masked content": "latent nothing"}
    return init_latent, {}


def image_conditioning(model, source: torch.Tensor, init_latent: torch.Tensor, image_mask: Image.Image | None,
                       round_mask: bool, mask_weight: float) -> torch.Tensor:
    """What the UNet gets besides the latent (spec §3.10). ``source`` is ``(B, 3, H, W)`` in [-1, 1].

    Inpainting models: ``[mask (1), masked-image latent (4)]``; instruct-pix2pix: the image latent
    (unscaled posterior mean); other models: a dummy ``(B, 5, 1, 1)`` of zeros.
    """
    if model.is_pix2pix:
        return torch.cat([model.encode_first_stage(img[None]) / model.scale_factor for img in source])
    if not model.is_inpainting:
        return source.new_zeros(source.shape[0], 5, 1, 1)
    if image_mask is not None:
        cond_mask = torch.from_numpy(np.array(image_mask.convert("L")).astype(np.float32) / 255.0)[None, None]
        if round_mask:
            cond_mask = torch.round(cond_mask)
    else:
        cond_mask = source.new_ones(1, 1, *source.shape[-2:])
    cond_mask = cond_mask.to(source)
    masked = torch.lerp(source, source * (1.0 - cond_mask), mask_weight)
    masked_latent = model.encode_first_stage(masked)
    cond_mask = torch.nn.functional.interpolate(cond_mask, size=init_latent.shape[-2:])
    cond_mask = cond_mask.expand(masked_latent.shape[0], -1, -1, -1)
    return torch.cat([cond_mask, masked_latent], dim=1)


def decode_latents(model, latents: torch.Tensor) -> list[Image.Image]:
    """Latents → RGB images, ``floor(255·clamp((x+1)/2, 0, 1))`` (spec §3.13)."""
    pixels = torch.clamp((model.decode_first_stage(latents).float() + 1.0) / 2.0, min=0.0, max=1.0)
    out = []
    for sample in pixels:
        array = (255.0 * np.moveaxis(sample.cpu().numpy(), 0, 2)).astype(np.uint8)
        out.append(Image.fromarray(array))
    return out
